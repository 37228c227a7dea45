//! openraft's async runtime for admit: tokio, except for the random draws
//! (election timeouts, the first wait of a tick), which come from a
//! generator per thread that a deterministic simulation can seed
//! ([`seed_draws`]). Outside a simulation that generator is seeded from the
//! operating system once per thread, so production timing is as random as
//! with openraft's own tokio runtime.
//!
//! May import openraft and tokio only.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

use openraft::{AsyncRuntime, OptionalSend, TokioInstant, TokioRuntime};
use rand_openraft::rngs::SmallRng;
use rand_openraft::{Rng, SeedableRng};

thread_local! {
    static DRAWS: RefCell<SmallRng> =
        RefCell::new(SmallRng::seed_from_u64(rand_openraft::rng().next_u64()));
}

/// Seeds this thread's draws: every later election timeout drawn on this
/// thread follows from `seed`. For a simulation on a single-threaded
/// runtime, where every task runs on the calling thread.
#[doc(hidden)]
pub fn seed_draws(seed: u64) {
    DRAWS.with(|d| *d.borrow_mut() = SmallRng::seed_from_u64(seed));
}

/// A draw below `n` (`n` > 0) from this thread's generator: the inline
/// journal's simulated fsync time, which a seeded simulation repeats.
pub(crate) fn draw_below(n: u64) -> u64 {
    DRAWS.with(|d| d.borrow_mut().next_u64() % n)
}

/// tokio, with seedable draws (module docs).
#[derive(Debug)]
pub struct Runtime(TokioRuntime);

type Tk = TokioRuntime;

impl AsyncRuntime for Runtime {
    type JoinError = <Tk as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <Tk as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <Tk as AsyncRuntime>::Sleep;
    type Instant = TokioInstant;
    type TimeoutError = <Tk as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <Tk as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = SmallRng;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        Tk::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        Tk::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        Tk::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        Tk::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        Tk::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        Tk::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        // a generator of its own per draw, split off the thread's stream
        DRAWS.with(|d| SmallRng::seed_from_u64(d.borrow_mut().next_u64()))
    }

    type Mpsc = <Tk as AsyncRuntime>::Mpsc;
    type Watch = <Tk as AsyncRuntime>::Watch;
    type Oneshot = <Tk as AsyncRuntime>::Oneshot;
    type Mutex<T: OptionalSend + 'static> = <Tk as AsyncRuntime>::Mutex<T>;

    fn new(threads: usize) -> Self {
        Self(Tk::new(threads))
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.0.block_on(future)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_openraft::RngExt;

    #[test]
    fn seeded_draws_repeat() {
        let draw = || (0..4).map(|_| Runtime::thread_rng().random_range(500..1_000u64));
        seed_draws(7);
        let a: Vec<u64> = draw().collect();
        seed_draws(7);
        let b: Vec<u64> = draw().collect();
        seed_draws(8);
        let c: Vec<u64> = draw().collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|t| (500..1_000).contains(t)));
    }
}
