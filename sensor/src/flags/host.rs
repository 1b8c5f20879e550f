//! What the flags name on this host: interfaces (by name, or the default route's), the tap,
//! token files and the targeting file, each looked up before anything is attached.
//!
//! Rules: an interface that is not in this network namespace, or is given twice, is an
//! error naming its flag; a token file that cannot be read or is empty is an error naming
//! its flag (the token itself is never printed).
use super::{ConfigError, Interface, Targeting, TargetingError};
use crate::sys;

pub(super) fn resolve_interfaces(names: Vec<String>) -> Result<Vec<Interface>, ConfigError> {
    let mut interfaces: Vec<Interface> = Vec::new();
    for name in names {
        if interfaces.iter().any(|i| i.name == name) {
            return Err(ConfigError::DuplicateInterface { name });
        }
        let ifindex = sys::interface_index(&name)
            .ok_or_else(|| ConfigError::UnknownInterface { name: name.clone() })?;
        interfaces.push(Interface { name, ifindex });
    }
    Ok(interfaces)
}

/// `--host-iface`s, or without any the interfaces that hold a default route.
pub(super) fn resolve_host_interfaces(
    names: Vec<String>,
    selected: &[Interface],
) -> Result<Vec<Interface>, ConfigError> {
    let names = if names.is_empty() {
        default_route_interfaces()
    } else {
        names
    };
    let mut interfaces: Vec<Interface> = Vec::new();
    for name in names {
        if selected.iter().any(|i| i.name == name) {
            return Err(ConfigError::HostInterfaceIsSelected { name });
        }
        if interfaces.iter().any(|i| i.name == name) {
            continue;
        }
        let ifindex = sys::interface_index(&name)
            .ok_or_else(|| ConfigError::UnknownHostInterface { name: name.clone() })?;
        interfaces.push(Interface { name, ifindex });
    }
    Ok(interfaces)
}

/// The interfaces of this namespace's IPv4 and IPv6 default routes, from `/proc/net`.
pub(super) fn default_route_interfaces() -> Vec<String> {
    let mut names = Vec::new();
    // /proc/net/route: Iface Destination Gateway ... (hex; destination 00000000 = default).
    if let Ok(text) = std::fs::read_to_string("/proc/net/route") {
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 7 && fields[1] == "00000000" && fields[7] == "00000000" {
                names.push(fields[0].to_owned());
            }
        }
    }
    // /proc/net/ipv6_route: dest plen src splen nexthop metric refcnt use flags iface.
    if let Ok(text) = std::fs::read_to_string("/proc/net/ipv6_route") {
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() == 10
                && fields[1] == "00"
                && fields[0].bytes().all(|b| b == b'0')
                && fields[9] != "lo"
            {
                names.push(fields[9].to_owned());
            }
        }
    }
    names.dedup();
    names
}

pub(super) fn resolve_tap(
    tap: Option<String>,
    interfaces: &[Interface],
) -> Result<Option<Interface>, ConfigError> {
    Ok(match tap {
        Some(name) if interfaces.iter().any(|i| i.name == name) => {
            return Err(ConfigError::TapIsSelected { name });
        }
        Some(name) => {
            let ifindex =
                sys::interface_index(&name).ok_or_else(|| ConfigError::UnknownTap { name: name.clone() })?;
            Some(Interface { name, ifindex })
        }
        None => None,
    })
}

pub(super) fn read_token(
    flag: &'static str,
    file: Option<&std::path::Path>,
    token: Option<String>,
) -> Result<Option<String>, ConfigError> {
    Ok(match (file, token) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::TokenFile {
                flag,
                path: path.display().to_string(),
                source,
            })?;
            let token = text.trim().to_owned();
            if token.is_empty() {
                return Err(ConfigError::EmptyToken {
                    flag,
                    path: path.display().to_string(),
                });
            }
            Some(token)
        }
        (None, token) => token.filter(|t| !t.is_empty()),
    })
}

pub(super) fn read_targeting(path: &std::path::Path, snaplen: u32) -> Result<Targeting, ConfigError> {
    let error = |source| ConfigError::Targeting {
        path: path.display().to_string(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(|source| {
        error(TargetingError::Read {
            path: path.display().to_string(),
            source,
        })
    })?;
    Targeting::parse(&text, snaplen).map_err(error)
}
