//! Graceful shutdown: one [`Shutdown`] handle that servers wait on. It fires on SIGINT or
//! SIGTERM (with [`Shutdown::on_signals`]) or when [`Shutdown::trigger`] is called.

use tokio::sync::watch;

/// A cloneable shutdown signal.
#[derive(Clone, Debug)]
pub struct Shutdown {
    sender: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        let (sender, _) = watch::channel(false);
        Shutdown { sender }
    }

    /// Also fires on SIGINT (Ctrl-C) or SIGTERM.
    pub fn on_signals(self) -> Shutdown {
        let this = self.clone();
        tokio::spawn(async move {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("SIGTERM handler");
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            #[cfg(not(unix))]
            let _ = ctrl_c.await;
            tracing::info!("shutdown signal received");
            this.trigger();
        });
        self
    }

    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.sender.borrow()
    }

    /// Completes once shutdown has been triggered.
    pub async fn wait(&self) {
        let mut receiver = self.sender.subscribe();
        let _ = receiver.wait_for(|fired| *fired).await;
    }
}

/// A server running as a task (see [`crate::grpc::serve`]), stopped through its shutdown
/// signal; its errors are reported as the service's `E`.
pub struct ServerTask<E> {
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    error: std::marker::PhantomData<fn() -> E>,
}

impl<E: From<std::io::Error> + From<tonic::transport::Error>> ServerTask<E> {
    pub fn new(
        shutdown: Shutdown,
        task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    ) -> Self {
        ServerTask {
            shutdown,
            task,
            error: std::marker::PhantomData,
        }
    }

    /// Fires the shutdown signal and waits for the server to finish in-flight requests.
    pub async fn stop(self) -> Result<(), E> {
        self.shutdown.trigger();
        self.wait().await
    }

    /// Waits until the server stops (after its shutdown signal fires).
    pub async fn wait(self) -> Result<(), E> {
        match self.task.await {
            Ok(result) => result.map_err(E::from),
            Err(e) => Err(E::from(std::io::Error::other(format!("server task: {e}")))),
        }
    }
}
