//! Loop devices through their ioctls (the syscall seam for loop attachments): take a free
//! device with `LOOP_CTL_GET_FREE`, bind a file with one `LOOP_CONFIGURE` (flags and
//! direct I/O in the same call, no window where the device is half set up), detach with
//! `LOOP_CLR_FD`, and find devices again from `/sys/block/loop*/loop/backing_file`.
//! Blocking calls: run them off the async runtime.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;

const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;
const LO_NAME_SIZE: usize = 64;

/// `struct loop_info64` from linux/loop.h.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` from linux/loop.h (LOOP_CONFIGURE, Linux 5.8+).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

fn zeroed_info() -> LoopInfo64 {
    // SAFETY: LoopInfo64 is plain integers and byte arrays; all-zero is its "unset" value.
    unsafe { std::mem::zeroed() }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopOptions {
    pub read_only: bool,
    /// The kernel detaches the device when its last user closes it (after the unmount).
    pub autoclear: bool,
    /// Ask for direct I/O; the kernel falls back to buffered where the file cannot do it.
    pub direct_io: bool,
}

#[derive(Debug)]
pub struct LoopDevice {
    pub number: u32,
    pub path: String,
    pub direct_io: bool,
    /// The device, open. With autoclear, closing it before something else opens the
    /// device (the mount) detaches it, so the caller holds it until then.
    pub handle: File,
}

fn device_path(number: u32) -> String {
    format!("/dev/loop{number}")
}

fn ioctl_result(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// Bind `file` to a free loop device; `name` is what the device reports as its file
/// (`file` may be a held descriptor's `/proc/self/fd/N`).
pub fn attach(file: &Path, name: &Path, mut opts: LoopOptions) -> io::Result<LoopDevice> {
    use std::os::unix::fs::OpenOptionsExt;
    let open = |custom: i32| OpenOptions::new().read(true).write(!opts.read_only).custom_flags(custom).open(file);
    // Direct I/O needs the backing file opened O_DIRECT (newer kernels take it from the
    // file); a filesystem that cannot do O_DIRECT gets a buffered device instead.
    let backing = match opts.direct_io {
        true => match open(libc::O_DIRECT) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                opts.direct_io = false;
                open(0)?
            }
            Err(e) => return Err(e),
        },
        false => open(0)?,
    };
    let control = OpenOptions::new().read(true).write(true).open("/dev/loop-control")?;
    let mut info = zeroed_info();
    let name = name.as_os_str().as_encoded_bytes();
    let n = name.len().min(LO_NAME_SIZE - 1);
    info.lo_file_name[..n].copy_from_slice(&name[..n]);
    info.lo_flags = if opts.read_only { LO_FLAGS_READ_ONLY } else { 0 }
        | if opts.autoclear { LO_FLAGS_AUTOCLEAR } else { 0 }
        | if opts.direct_io { LO_FLAGS_DIRECT_IO } else { 0 };
    // Another process may take the device between GET_FREE and CONFIGURE: try again.
    let mut last = io::Error::other("no free loop device");
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let number = ioctl_result(unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) })? as u32;
        let path = device_path(number);
        let dev = OpenOptions::new().read(true).write(true).open(&path)?;
        let mut config = LoopConfig { fd: backing.as_raw_fd() as u32, block_size: 0, info, reserved: [0; 8] };
        // SAFETY: `config` is a valid loop_config that outlives the call.
        let mut rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &mut config as *mut LoopConfig) };
        if rc < 0 && opts.direct_io && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
            // Kernels that refuse rather than fall back when the file cannot do O_DIRECT.
            config.info.lo_flags &= !LO_FLAGS_DIRECT_IO;
            // SAFETY: as above.
            rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &mut config as *mut LoopConfig) };
        }
        match ioctl_result(rc) {
            Ok(_) => {
                let direct_io = status(&dev).map(|i| i.lo_flags & LO_FLAGS_DIRECT_IO != 0).unwrap_or(false);
                return Ok(LoopDevice { number, path, direct_io, handle: dev });
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

fn status(dev: &File) -> io::Result<LoopInfo64> {
    let mut info = zeroed_info();
    // SAFETY: `info` is a valid loop_info64 for the kernel to fill.
    ioctl_result(unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_GET_STATUS64, &mut info as *mut LoopInfo64) })?;
    Ok(info)
}

/// Detach `/dev/loopN`. A device still open elsewhere (mounted) is detached by the kernel
/// when it is last closed. A device already free is not an error.
pub fn detach(path: &str) -> io::Result<()> {
    let dev = match OpenOptions::new().read(true).open(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    // SAFETY: LOOP_CLR_FD takes no argument.
    match ioctl_result(unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD, 0) }) {
        Ok(_) => Ok(()),
        // ENXIO: nothing bound.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Every bound loop device and its backing file, from sysfs.
pub fn bound(sys_block: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let mut out: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let number = name.strip_prefix("loop")?;
            number.parse::<u32>().ok()?;
            let text = std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            let file = text.trim_end_matches('\n');
            Some((format!("/dev/{name}"), PathBuf::from(file)))
        })
        .collect();
    out.sort();
    out
}

/// The backing file of one device, if it is bound.
pub fn backing_file(sys_block: &Path, path: &str) -> Option<PathBuf> {
    let name = path.strip_prefix("/dev/")?;
    let text = std::fs::read_to_string(sys_block.join(name).join("loop/backing_file")).ok()?;
    Some(PathBuf::from(text.trim_end_matches('\n')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_sizes_match_linux_loop_h() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }

    #[test]
    fn sysfs_listing_reads_backing_files() {
        let dir = tempfile::tempdir().unwrap();
        for (name, file) in [("loop0", Some("/img/a.sqfs\n")), ("loop1", None), ("loop12", Some("/img/b"))] {
            std::fs::create_dir_all(dir.path().join(name).join("loop")).unwrap();
            if let Some(f) = file {
                std::fs::write(dir.path().join(name).join("loop/backing_file"), f).unwrap();
            }
        }
        std::fs::create_dir_all(dir.path().join("sda")).unwrap();
        assert_eq!(
            bound(dir.path()),
            vec![("/dev/loop0".into(), "/img/a.sqfs".into()), ("/dev/loop12".into(), "/img/b".into())]
        );
        assert_eq!(backing_file(dir.path(), "/dev/loop12"), Some("/img/b".into()));
        assert_eq!(backing_file(dir.path(), "/dev/loop1"), None);
    }

    /// Real loop devices: needs root and /dev/loop-control (the host tier has both).
    #[test]
    fn attach_read_only_finds_it_again_and_detaches() {
        if !nix::unistd::geteuid().is_root() || !Path::new("/dev/loop-control").exists() {
            panic!("this test needs root and /dev/loop-control; scripts/test runs it as root");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("disk.img");
        std::fs::write(&file, vec![7u8; 1 << 20]).unwrap();
        let dev = attach(&file, &file, LoopOptions { read_only: true, autoclear: false, direct_io: true }).unwrap();
        let sys = Path::new("/sys/block");
        assert_eq!(backing_file(sys, &dev.path), Some(file.clone()));
        assert!(bound(sys).contains(&(dev.path.clone(), file.clone())));
        assert_eq!(std::fs::read_to_string(format!("/sys/block/loop{}/ro", dev.number)).unwrap().trim(), "1");
        let mut first = vec![0u8; 4096];
        use std::io::Read;
        File::open(&dev.path).unwrap().read_exact(&mut first).unwrap();
        assert!(first.iter().all(|b| *b == 7));
        let path = dev.path.clone();
        drop(dev);
        detach(&path).unwrap();
        // LOOP_CLR_FD on a device something else still has open (udev's probe of the new
        // device, say) is deferred to its last close: give that a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while backing_file(sys, &path).is_some() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(backing_file(sys, &path), None);
        detach(&path).unwrap();
    }
}
