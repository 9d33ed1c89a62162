//! A TCP proxy in front of the broker that a test can cut, as a failing uplink cuts an appliance's
//! connection: every open connection is dropped at once (no MQTT DISCONNECT, no TCP goodbye from the
//! appliance) and new ones are refused until the line is restored.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OnceCell, watch};

pub struct CuttableLine {
    pub addr: SocketAddr,
    target: Arc<OnceCell<SocketAddr>>,
    up: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
}

impl CuttableLine {
    /// Listens on a free loopback port; connections wait until [`CuttableLine::connect_to`].
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let target = Arc::new(OnceCell::new());
        let up = Arc::new(AtomicBool::new(true));
        let (cut, cuts) = watch::channel(0u64);
        let (t, u) = (target.clone(), up.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !u.load(Ordering::SeqCst) {
                    continue;
                }
                let Some(target) = t.get().copied() else {
                    continue;
                };
                let mut cuts = cuts.clone();
                cuts.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cuts.changed() => {}
                    }
                    // Both ends are dropped: the broker sees the connection end without an MQTT
                    // DISCONNECT, as when a line dies.
                });
            }
        });
        Self {
            addr,
            target,
            up,
            cut,
        }
    }

    pub fn connect_to(&self, target: SocketAddr) {
        let _ = self.target.set(target);
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}
