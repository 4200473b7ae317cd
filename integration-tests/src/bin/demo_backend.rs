//! `routemaster-demo-backend NAME ADDR`: the echo backend as a process, for the quick
//! start and for trying routes by hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(name), Some(addr)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: routemaster-demo-backend NAME ADDR (e.g. lms-1 127.0.0.1:9001)");
    };
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "demo backend {name} listening on {}",
        listener.local_addr()?
    );
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    routemaster_integration_tests::backend::serve(
        listener,
        name,
        Arc::new(AtomicUsize::new(0)),
        stop,
    )
    .await;
    Ok(())
}
