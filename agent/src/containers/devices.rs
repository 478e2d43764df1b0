//! Which devices a container may use: the device cgroup. Without it, a root container
//! with `cap_mknod` (in the default set, as in Docker) could make a node for a host disk
//! and read or write it. The policy is runc's and Docker's: `mknod` of anything, but
//! read and write only of the standard nodes tankd makes in its `/dev`.
//!
//! On cgroup v1 the policy is lines in the `devices` controller; on cgroup v2 it is an
//! eBPF program of type `BPF_PROG_TYPE_CGROUP_DEVICE` attached to the container's group,
//! built here from the same rules (as crun and runc build theirs). Hand-written rather
//! than through a BPF crate: the program is a dozen instructions per rule, and the crates
//! that assemble and load BPF (aya, libbpf-rs) bring a loader, ELF parsing or a C library
//! for what is two `bpf(2)` calls.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// One allowed device class: `c`/`b`/`a`, major and minor (`None`: any), access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub kind: char,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: &'static str,
}

const fn rule(kind: char, major: Option<u32>, minor: Option<u32>, access: &'static str) -> Rule {
    Rule { kind, major, minor, access }
}

/// runc's default allow list.
pub const ALLOWED: &[Rule] = &[
    rule('c', None, None, "m"),
    rule('b', None, None, "m"),
    rule('c', Some(1), Some(3), "rwm"),    // null
    rule('c', Some(1), Some(5), "rwm"),    // zero
    rule('c', Some(1), Some(7), "rwm"),    // full
    rule('c', Some(1), Some(8), "rwm"),    // random
    rule('c', Some(1), Some(9), "rwm"),    // urandom
    rule('c', Some(5), Some(0), "rwm"),    // tty
    rule('c', Some(5), Some(1), "rwm"),    // console
    rule('c', Some(5), Some(2), "rwm"),    // ptmx
    rule('c', Some(136), None, "rwm"),     // pts/*
    rule('c', Some(10), Some(200), "rwm"), // net/tun
];

/// The rule as a v1 `devices.allow` line, `c 1:3 rwm`.
pub fn v1_line(r: &Rule) -> String {
    let n = |v: Option<u32>| v.map_or("*".to_owned(), |v| v.to_string());
    format!("{} {}:{} {}", r.kind, n(r.major), n(r.minor), r.access)
}

/// The policy on the group at `dir`.
pub fn apply(version: super::cgroup::Version, dir: &Path) -> std::io::Result<()> {
    match version {
        super::cgroup::Version::V1 => apply_v1(dir),
        super::cgroup::Version::V2 => apply_v2(dir),
    }
}

/// v1: deny everything, then allow the list.
pub fn apply_v1(dir: &Path) -> std::io::Result<()> {
    std::fs::write(dir.join("devices.deny"), "a")?;
    for r in ALLOWED {
        std::fs::write(dir.join("devices.allow"), v1_line(r))?;
    }
    Ok(())
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    /// dst register in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: dst | (src << 4), off, imm }
}

// Opcodes (linux/bpf.h, linux/bpf_common.h).
const LDX_MEM_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const AND64_K: u8 = 0x57;
const RSH64_K: u8 = 0x77;
const MOV64_K: u8 = 0xb7;
const MOV64_X: u8 = 0xbf;
const JNE_K: u8 = 0x55;
const EXIT: u8 = 0x95;

// struct bpf_cgroup_dev_ctx: access_type (type | access << 16), major, minor.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

/// The program: 1 (allow) when a rule admits the device and access, else 0.
/// Registers: r2 type, r3 access, r4 major, r5 minor; r1 is scratch after the loads.
pub fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(AND64_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(RSH64_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for r in rules {
        let mut checks = Vec::new();
        match r.kind {
            'c' => checks.push((2u8, DEV_CHAR)),
            'b' => checks.push((2, DEV_BLOCK)),
            _ => {}
        }
        let allowed = r.access.chars().fold(0, |a, c| {
            a | match c {
                'm' => ACC_MKNOD,
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                _ => 0,
            }
        });
        if let Some(m) = r.major {
            checks.push((4, m as i32));
        }
        if let Some(m) = r.minor {
            checks.push((5, m as i32));
        }
        // Each check jumps past the rest of this rule's block when it fails.
        let access_len = if allowed == 7 { 0 } else { 3 };
        let mut left = checks.len() as i16 + access_len + 2;
        for (reg, value) in checks {
            left -= 1;
            p.push(insn(JNE_K, reg, 0, left, value));
        }
        if access_len > 0 {
            p.push(insn(MOV64_X, 1, 3, 0, 0));
            p.push(insn(AND64_K, 1, 0, 0, !allowed & 7));
            left -= 3;
            p.push(insn(JNE_K, 1, 0, left, 0));
        }
        p.push(insn(MOV64_K, 0, 0, 0, 1));
        p.push(insn(EXIT, 0, 0, 0, 0));
    }
    p.push(insn(MOV64_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    /// The rest of `union bpf_attr` for this command, zero.
    rest: [u64; 12],
}

#[repr(C)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    rest: [u64; 4],
}

fn bpf<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, fully initialised `union bpf_attr` prefix of its size.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const T, std::mem::size_of::<T>()) };
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(r) }
}

/// v2: load [`program`] of [`ALLOWED`] and attach it to the group at `dir`. The group
/// keeps the program after the descriptors close.
pub fn apply_v2(dir: &Path) -> std::io::Result<()> {
    let prog = program(ALLOWED);
    let license = c"Apache-2.0";
    let mut name = [0u8; 16];
    name[..11].copy_from_slice(b"tankd_devic");
    let mut load = ProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        rest: [0; 12],
    };
    let fd = match bpf(BPF_PROG_LOAD, &load) {
        Ok(fd) => fd,
        Err(e) => {
            // Again with the verifier's log, to say why.
            let mut log = vec![0u8; 1 << 16];
            (load.log_level, load.log_size, load.log_buf) = (1, log.len() as u32, log.as_mut_ptr() as u64);
            if let Ok(fd) = bpf(BPF_PROG_LOAD, &load) {
                // SAFETY: a descriptor the kernel just returned, used by nothing else.
                drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
            }
            let text = String::from_utf8_lossy(&log[..log.iter().position(|b| *b == 0).unwrap_or(0)]).into_owned();
            return Err(std::io::Error::new(e.kind(), format!("loading the device program: {e}; verifier: {text}")));
        }
    };
    // SAFETY: the kernel just returned this descriptor to us.
    let prog_fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let group = std::fs::File::open(dir)?;
    let attach = ProgAttach {
        target_fd: group.as_raw_fd() as u32,
        attach_bpf_fd: prog_fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        rest: [0; 4],
    };
    bpf(BPF_PROG_ATTACH, &attach).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run the program the way the kernel would, on (type, access, major, minor).
    fn run(p: &[Insn], ctx: [u32; 3]) -> u64 {
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => {
                    assert_eq!(src, 1, "loads only from the context");
                    r[dst] = ctx[i.off as usize / 4] as u64;
                }
                AND64_K => r[dst] &= i.imm as u64,
                RSH64_K => r[dst] >>= i.imm,
                MOV64_K => r[dst] = i.imm as u64,
                MOV64_X => r[dst] = r[src],
                JNE_K if r[dst] != i.imm as u64 => pc += i.off as usize,
                JNE_K => {}
                EXIT => return r[0],
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    fn ask(kind: i32, access: i32, major: u32, minor: u32) -> u64 {
        run(&program(ALLOWED), [(kind | (access << 16)) as u32, major, minor])
    }

    #[test]
    fn the_standard_nodes_open_and_host_disks_do_not() {
        let rw = ACC_READ | ACC_WRITE;
        assert_eq!(ask(DEV_CHAR, rw, 1, 3), 1, "/dev/null");
        assert_eq!(ask(DEV_CHAR, rw, 1, 9), 1, "/dev/urandom");
        assert_eq!(ask(DEV_CHAR, rw, 136, 4), 1, "a pty");
        assert_eq!(ask(DEV_BLOCK, ACC_READ, 8, 0), 0, "/dev/sda, read");
        assert_eq!(ask(DEV_BLOCK, ACC_WRITE, 253, 0), 0, "a device-mapper disk, write");
        assert_eq!(ask(DEV_CHAR, ACC_READ, 1, 1), 0, "/dev/mem");
        assert_eq!(ask(DEV_BLOCK, ACC_MKNOD, 8, 0), 1, "mknod alone is allowed, as in runc");
        assert_eq!(ask(DEV_CHAR, ACC_MKNOD | ACC_READ, 1, 1), 0, "mknod and read of /dev/mem");
    }

    #[test]
    fn v1_lines_are_the_kernel_format() {
        assert_eq!(v1_line(&ALLOWED[0]), "c *:* m");
        assert_eq!(v1_line(&ALLOWED[2]), "c 1:3 rwm");
        assert_eq!(v1_line(&ALLOWED[10]), "c 136:* rwm");
    }
}
