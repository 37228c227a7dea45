//! Gates for tests that hold a state machine or a snapshot at a chosen
//! point (no timing): a blocking thread waits at the gate until the test
//! opens it.

use std::sync::{Arc, Condvar, Mutex};

use admit_raft::App;

use super::{Add, Counters};

/// A gate blocking threads wait at until the test opens it.
#[derive(Debug, Default)]
pub struct Gate {
    /// (open, threads that reached it)
    state: Mutex<(bool, usize)>,
    cv: Condvar,
}

impl Gate {
    pub fn pass(&self) {
        let mut s = self.state.lock().unwrap();
        s.1 += 1;
        self.cv.notify_all();
        while !s.0 {
            s = self.cv.wait(s).unwrap();
        }
    }

    pub fn reached(&self) -> usize {
        self.state.lock().unwrap().1
    }

    pub fn open(&self) {
        self.state.lock().unwrap().0 = true;
        self.cv.notify_all();
    }
}

/// Opens the gate when dropped, so a failing test leaves no thread waiting.
pub struct OpenOnDrop(pub Arc<Gate>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// [`Counters`] whose apply of a command with the key `hold` waits at the
/// gate (it blocks the state machine's runtime thread meanwhile).
#[derive(Debug, Clone)]
pub struct Held {
    pub inner: Counters,
    pub gate: Arc<Gate>,
}

impl App for Held {
    type Command = Add;
    type Response = u64;

    fn apply(&mut self, index: u64, cmd: Add) -> u64 {
        if cmd.key == "hold" {
            self.gate.pass();
        }
        self.inner.apply(index, cmd)
    }

    fn snapshot(&self) -> Vec<u8> {
        self.inner.snapshot()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.inner.restore(bytes)
    }

    fn check_snapshot(bytes: &[u8]) -> Result<(), String> {
        Counters::check_snapshot(bytes)
    }
}
