//! A serial line between two real processes: two pseudo-terminals joined by a relay
//! thread that can corrupt and drop bytes on the way, like a noisy cable.
//!
//! Test-only FFI: `openpty`, termios and non-blocking reads on the masters come straight
//! from libc, each call with its safety argument.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// One pseudo-terminal: the master the relay uses, the slave a process opens by path.
fn openpty() -> (OwnedFd, OwnedFd, PathBuf) {
    let (mut master, mut slave) = (0, 0);
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: openpty writes two fds and a NUL-terminated name into the buffers given.
    let rc = unsafe {
        libc::openpty(&mut master, &mut slave, name.as_mut_ptr(), std::ptr::null(), std::ptr::null())
    };
    assert_eq!(rc, 0, "openpty failed: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just opened and are owned here alone.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    // Raw from the start, so nothing is echoed or translated before a process opens it.
    // SAFETY: termios is plain data filled by tcgetattr on a valid fd.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        libc::tcgetattr(slave.as_raw_fd(), &mut t);
        libc::cfmakeraw(&mut t);
        libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &t);
        let flags = libc::fcntl(master.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(master.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    // SAFETY: `name` is NUL-terminated by openpty.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }.to_string_lossy().into_owned();
    (master, slave, path.into())
}

/// Two ports joined by a relay; the line is up while this lives.
pub struct SerialLine {
    /// The box's end.
    pub box_port: PathBuf,
    /// The technician's end.
    pub host_port: PathBuf,
    /// Chance per byte, in millionths, that the relay flips a bit in it.
    pub flip_ppm: Arc<AtomicU32>,
    /// Chance per byte, in millionths, that the relay drops it.
    pub drop_ppm: Arc<AtomicU32>,
    /// Line rate to imitate (bits/s, 10 bits per byte as 8N1); 0 = as fast as the ptys.
    pub baud: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    relay: Option<std::thread::JoinHandle<()>>,
    // Held open so a process closing its end does not hang up the line.
    _slaves: [OwnedFd; 2],
}

impl SerialLine {
    /// A clean line.
    pub fn new() -> Self {
        let (ma, sa, pa) = openpty();
        let (mb, sb, pb) = openpty();
        let stop = Arc::new(AtomicBool::new(false));
        let (flip_ppm, drop_ppm) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let baud = Arc::new(AtomicU32::new(0));
        let noise =
            Noise { flip: Arc::clone(&flip_ppm), drop: Arc::clone(&drop_ppm), baud: Arc::clone(&baud) };
        let s = Arc::clone(&stop);
        let relay = std::thread::spawn(move || relay(ma, mb, &s, &noise));
        Self {
            box_port: pa,
            host_port: pb,
            flip_ppm,
            drop_ppm,
            baud,
            stop,
            relay: Some(relay),
            _slaves: [sa, sb],
        }
    }
}

impl Default for SerialLine {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for SerialLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.relay.take() {
            let _ = r.join();
        }
    }
}

/// What the relay does to the bytes.
struct Noise {
    flip: Arc<AtomicU32>,
    drop: Arc<AtomicU32>,
    baud: Arc<AtomicU32>,
}

fn relay(a: OwnedFd, b: OwnedFd, stop: &AtomicBool, noise: &Noise) {
    let (flip, drop) = (&noise.flip, &noise.drop);
    // xorshift: reproducible noise without a dependency.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 1_000_000) as u32
    };
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let mut moved = false;
        for (from, to) in [(&a, &b), (&b, &a)] {
            // SAFETY: reading into a live buffer of the given length from an open fd.
            let n = unsafe { libc::read(from.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                continue;
            }
            moved = true;
            // The time these bytes take on a real line (one direction at a time: a
            // request/reply protocol rarely has both busy).
            let baud = noise.baud.load(Ordering::Relaxed);
            if baud > 0 {
                std::thread::sleep(std::time::Duration::from_secs_f64(n as f64 * 10.0 / baud as f64));
            }
            let mut out = Vec::with_capacity(n as usize);
            for &byte in &buf[..n as usize] {
                if next() < drop.load(Ordering::Relaxed) {
                    continue;
                }
                let flipped = next() < flip.load(Ordering::Relaxed);
                out.push(if flipped { byte ^ (1 << (next() % 8)) } else { byte });
            }
            let mut off = 0;
            while off < out.len() && !stop.load(Ordering::Relaxed) {
                // SAFETY: writing initialised bytes from a live buffer to an open fd.
                let w = unsafe { libc::write(to.as_raw_fd(), out[off..].as_ptr().cast(), out.len() - off) };
                if w > 0 {
                    off += w as usize;
                } else {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
            }
        }
        if !moved {
            std::thread::sleep(std::time::Duration::from_micros(300));
        }
    }
}

/// `kensa diag <host port> <args>`, which must succeed; its output.
pub fn diag(line: &SerialLine, args: &[&str]) -> String {
    let out = crate::run_ok(crate::kensa().arg("diag").arg(&line.host_port).args(args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kensa diag <host port> <args>` when it succeeds, `None` while the box does not
/// answer (restarting, starting up).
pub fn diag_if_up(line: &SerialLine, args: &[&str]) -> Option<String> {
    let out = crate::kensa().arg("diag").arg(&line.host_port).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The number after `key` in a `kensa diag status` line.
pub fn count(status: &str, key: &str) -> u64 {
    let rest = &status[status.find(key).unwrap_or_else(|| panic!("{key} in {status}")) + key.len()..];
    rest.split_whitespace().next().unwrap().parse().unwrap()
}
