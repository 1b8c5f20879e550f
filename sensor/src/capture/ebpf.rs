//! Access to the loaded eBPF object: its settings, maps and programs, with errors that name
//! which one failed and, for a permission error, what the sensor needs.
//!
//! Rules: every map and program is looked up by the name `sensor-ebpf` gives it; a missing
//! one is [`CaptureError::Missing`], never a panic.
use aya::{
    maps::{Array, MapData},
    Ebpf,
};
use podcap_common::{
    SETTING_ANCESTOR_IDS, SETTING_CGROUP_ANCESTORS_OFFSET, SETTING_CGROUP_KN_OFFSET,
    SETTING_CGROUP_LEVEL_OFFSET, SETTING_KN_ID_OFFSET, SETTING_SOCK_CGROUP_OFFSET, SOCK_READ_LEN,
};

use super::{btf, CaptureError};

pub(super) fn permission_hint(source: &dyn std::fmt::Display) -> &'static str {
    let text = source.to_string();
    if text.contains("Operation not permitted")
        || text.contains("EPERM")
        || text.contains("Permission denied")
    {
        ": permission denied (run as root, or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)"
    } else {
        ""
    }
}

/// Tells the tc programs where a socket's cgroup id lies (for ingress packets of hostNetwork
/// pods); without the kernel's BTF they go unattributed, which is logged.
pub(super) fn set_socket_cgroup_offsets(settings: &mut Array<MapData, u32>) -> Result<(), CaptureError> {
    match btf::Btf::kernel().and_then(|b| btf::SocketCgroupOffsets::find(&b)) {
        Ok(offsets) if offsets.sock_cgroup < SOCK_READ_LEN - 8 => {
            set(settings, SETTING_CGROUP_KN_OFFSET, offsets.cgroup_kn)?;
            set(settings, SETTING_KN_ID_OFFSET, offsets.kn_id)?;
            set(settings, SETTING_CGROUP_LEVEL_OFFSET, offsets.cgroup_level)?;
            set(
                settings,
                SETTING_CGROUP_ANCESTORS_OFFSET,
                offsets.cgroup_ancestors,
            )?;
            set(settings, SETTING_ANCESTOR_IDS, u32::from(offsets.ancestor_ids))?;
            // Last: a non-zero socket offset turns the ingress lookups on.
            set(settings, SETTING_SOCK_CGROUP_OFFSET, offsets.sock_cgroup)
        }
        Ok(offsets) => {
            log::warn!(
                "sock.sk_cgrp_data lies at {} bytes, beyond what the capture reads; packets \
                 received by hostNetwork pods are not recorded",
                offsets.sock_cgroup
            );
            Ok(())
        }
        Err(e) => {
            log::warn!("{e}: packets received by hostNetwork pods are not recorded");
            Ok(())
        }
    }
}

pub(super) fn set(settings: &mut Array<MapData, u32>, index: u32, value: u32) -> Result<(), CaptureError> {
    settings.set(index, value, 0).map_err(|source| CaptureError::Map {
        name: "SETTINGS",
        action: format!("set {index}"),
        source: Box::new(source),
    })
}

pub(super) fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, CaptureError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(CaptureError::Missing { what: "map", name })?;
    T::try_from(map).map_err(|source| CaptureError::Map {
        name,
        action: "open".into(),
        source: Box::new(source),
    })
}

pub(super) fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, CaptureError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf.program_mut(name).ok_or(CaptureError::Missing {
        what: "program",
        name,
    })?;
    program
        .try_into()
        .map_err(|source| program_error(name, "open", source))
}

pub(super) fn program_error(
    name: &'static str,
    action: &str,
    source: aya::programs::ProgramError,
) -> CaptureError {
    let hint = permission_hint(&format!("{source:?}"));
    CaptureError::Program {
        name,
        action: action.to_owned(),
        hint,
        source: Box::new(source),
    }
}
