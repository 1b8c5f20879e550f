//! A test's sensor with its disk writes throttled through a cgroup.
use super::sh;

/// The sensor's writes throttled to `bytes_per_second` on the disk of `path`, through the
/// blkio controller (cgroup v1) or `io.max` (v2); lifted on drop.
pub struct WriteThrottle {
    group: std::path::PathBuf,
    limit_file: std::path::PathBuf,
    device: String,
    v2: bool,
}

impl WriteThrottle {
    pub fn new(pid: u32, path: &std::path::Path, bytes_per_second: u64) -> Self {
        let device = sh(&format!("findmnt -no MAJ:MIN -T {}", path.display()))
            .trim()
            .to_owned();
        let v1 = std::path::Path::new("/sys/fs/cgroup/blkio");
        let (group, limit_file, v2) = if v1.is_dir() {
            let group = v1.join(format!("podcap-test-{}", std::process::id()));
            let limit = group.join("blkio.throttle.write_bps_device");
            (group, limit, false)
        } else {
            let group =
                std::path::Path::new("/sys/fs/cgroup").join(format!("podcap-test-{}", std::process::id()));
            let limit = group.join("io.max");
            (group, limit, true)
        };
        std::fs::create_dir_all(&group).unwrap();
        let throttle = Self {
            group,
            limit_file,
            device,
            v2,
        };
        throttle.set(bytes_per_second);
        std::fs::write(throttle.group.join("cgroup.procs"), pid.to_string()).unwrap();
        throttle
    }

    /// Puts one more process under the limit (a sensor started after a `kill -9`).
    pub fn add(&self, pid: u32) {
        std::fs::write(self.group.join("cgroup.procs"), pid.to_string()).unwrap();
    }

    pub fn set(&self, bytes_per_second: u64) {
        let line = if self.v2 {
            let rate = if bytes_per_second == 0 {
                "max".to_owned()
            } else {
                bytes_per_second.to_string()
            };
            format!("{} wbps={rate}", self.device)
        } else {
            format!("{} {bytes_per_second}", self.device)
        };
        std::fs::write(&self.limit_file, line).unwrap();
    }
}

impl Drop for WriteThrottle {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| self.set(0));
        // The group goes once its processes have left (the sensor, when it ends).
        let procs = std::fs::read_to_string(self.group.join("cgroup.procs")).unwrap_or_default();
        let parent = self.group.parent().unwrap().join("cgroup.procs");
        for pid in procs.split_whitespace() {
            let _ = std::fs::write(&parent, pid);
        }
        let _ = std::fs::remove_dir(&self.group);
    }
}
