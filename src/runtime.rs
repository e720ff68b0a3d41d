//! The one executor every task of the hub runs on.
//!
//! The thread that calls [`block_on`] both runs the tasks and drives the I/O reactor, so a
//! request never hops between threads on its way through the hub (DESIGN.md §2: one
//! executor thread). Blocking file work goes to the cache writer thread or `smol::unblock`.

use smol::Executor;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

static EXECUTOR: Executor<'static> = Executor::new();
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);
static SHUTDOWN: event_listener::Event = event_listener::Event::new();

/// Starts the shutdown: listeners stop accepting and long-running requests end.
pub fn begin_shutdown() {
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
    SHUTDOWN.notify(usize::MAX);
}

/// Resolves once [`begin_shutdown`] has been called.
pub async fn shutting_down() {
    loop {
        let listener = SHUTDOWN.listen();
        if SHUTTING_DOWN.load(Ordering::SeqCst) {
            return;
        }
        listener.await;
    }
}

/// Spawns a task; it runs while some thread is inside [`block_on`].
pub fn spawn<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> smol::Task<T> {
    EXECUTOR.spawn(fut)
}

/// Runs the executor on this thread until `fut` completes.
pub fn block_on<T>(fut: impl Future<Output = T>) -> T {
    smol::block_on(EXECUTOR.run(fut))
}

/// Runs the executor on a new thread forever: for embedding the hub in another program
/// (the demo and the benches) after [`crate::app::start`].
pub fn spawn_thread() {
    std::thread::Builder::new()
        .name("yurthub".into())
        .spawn(|| block_on(std::future::pending::<()>()))
        .expect("spawn the executor thread");
}
