//! A tmpfs of a fixed size mounted under a temporary directory: a disk that
//! a test can fill under a node, and free again. Mounting needs root (or
//! CAP_SYS_ADMIN); without it a test skips loudly, unless
//! `PAXOS_KV_REQUIRE_TMPFS` is set (CI), where it fails.

use std::io::Write;
use std::path::PathBuf;

/// A mounted tmpfs; unmounted on drop.
pub struct Tmpfs {
    /// Where it is mounted.
    pub mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `16m`), or says why it cannot.
    pub fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mount = dir.path().join("disk");
        std::fs::create_dir(&mount).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&mount)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { mount, _dir: dir })
    }

    /// A 16 MiB tmpfs for `test`, or `None` after a loud SKIPPED line when
    /// this machine cannot mount one (a panic with `PAXOS_KV_REQUIRE_TMPFS`).
    pub fn or_skip(test: &str) -> Option<Tmpfs> {
        match Tmpfs::mount("16m") {
            Ok(disk) => Some(disk),
            Err(e) if std::env::var_os("PAXOS_KV_REQUIRE_TMPFS").is_some() => {
                panic!("{test}: PAXOS_KV_REQUIRE_TMPFS is set but {e}")
            }
            Err(e) => {
                eprintln!(
                    "SKIPPED {test}: cannot mount a tmpfs to fill ({e}); run as root to test"
                );
                None
            }
        }
    }

    fn filler(&self) -> PathBuf {
        self.mount.join("filler")
    }

    /// Fills the disk to the last byte.
    pub fn fill(&self) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.filler())
            .expect("filler");
        let block = vec![0xAAu8; 64 * 1024];
        let mut size = block.len();
        while size > 0 {
            match file.write(&block[..size]) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => size /= 2,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        let _ = file.sync_all();
    }

    /// Frees everything [`Tmpfs::fill`] took.
    pub fn free(&self) {
        std::fs::remove_file(self.filler()).expect("remove filler");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.mount)
            .status();
    }
}
