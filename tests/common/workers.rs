//! A multi-threaded executor: extra threads that run it until told to stop. Shared by the tests
//! and the benchmark (`benches/load.rs` includes this file).

use std::sync::Arc;
use std::thread::JoinHandle;

use smol::Executor;

/// Threads running an executor; dropping this stops them and waits for them to finish.
pub struct Workers {
    stop: Option<async_channel::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Runs `ex` on `n` more threads, besides whichever thread the caller runs it on.
    pub fn spawn(ex: &Arc<Executor<'static>>, n: usize) -> Workers {
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let threads = (0..n)
            .map(|_| {
                let (ex, stopped) = (ex.clone(), stopped.clone());
                // `recv` ends when `stop` is dropped, and `run` with it.
                std::thread::spawn(move || {
                    let _ = smol::block_on(ex.run(stopped.recv()));
                })
            })
            .collect();
        Workers {
            stop: Some(stop),
            threads,
        }
    }

    /// Stops the threads and waits for them, failing if any panicked.
    pub fn stop(mut self) -> std::thread::Result<()> {
        drop(self.stop.take());
        let joined: Vec<_> = self.threads.drain(..).map(JoinHandle::join).collect();
        joined.into_iter().collect()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        drop(self.stop.take());
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
