//! Every process the harness starts (Envoy, the authorization service, the load generator) is
//! held by a [`ChildGuard`]: dropping it kills and reaps the process. The release profile aborts
//! on panic, so drops do not run then: a panic hook kills whatever is still registered. And
//! each child gets `PR_SET_PDEATHSIG`, so even a harness killed by a signal leaves nothing behind.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

static LIVE: Mutex<BTreeMap<u64, Child>> = Mutex::new(BTreeMap::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static HOOK: Once = Once::new();

/// A running child process; killed and reaped on drop.
pub struct ChildGuard {
    id: u64,
    pid: u32,
    name: String,
}

impl ChildGuard {
    /// Spawns `command` (stdin closed); `stdout` piped when `pipe_stdout`.
    pub fn spawn(
        name: &str,
        command: &mut Command,
        pipe_stdout: bool,
    ) -> Result<(ChildGuard, Option<ChildStdout>), String> {
        install_panic_hook();
        command.stdin(Stdio::null());
        if pipe_stdout {
            command.stdout(Stdio::piped());
        }
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                // The child dies with the harness (SIGKILL), whatever ends the harness.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", command.get_program()))?;
        let stdout = child.stdout.take();
        let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
        let pid = child.id();
        live().insert(id, child);
        let guard = ChildGuard {
            id,
            pid,
            name: name.to_string(),
        };
        Ok((guard, stdout))
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `Some(status)` once the process has exited.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        live().get_mut(&self.id)?.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for the process to exit on its own; kills it after that.
    pub fn wait_timeout(self, timeout: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(format!("{} still running after {timeout:?}", self.name));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let child = live().remove(&self.id);
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn live() -> MutexGuard<'static, BTreeMap<u64, Child>> {
    LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// After the default panic message, kill every child still registered.
fn install_panic_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            // try_lock: the panicking thread may hold the lock already.
            if let Ok(mut children) = LIVE.try_lock() {
                for child in children.values_mut() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }));
    });
}
