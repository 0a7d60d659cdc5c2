//! WebSocket and other HTTP/1.1 `Upgrade`s: the upgrade is asked of the upstream (the only
//! hop-by-hop headers we pass on purpose), and on its `101` both sides' connections are spliced
//! together until either closes. Counted once, as the cohort's request, at the `101`.

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderValue, Request};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// The `Upgrade` a request asks for, when its `Connection` names `upgrade`.
pub fn requested<B>(req: &Request<B>) -> Option<HeaderValue> {
    let asks = req
        .headers()
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if asks {
        req.headers().get(UPGRADE).cloned()
    } else {
        None
    }
}

/// Puts the upgrade request back after the hop-by-hop headers were stripped.
pub fn ask(headers: &mut HeaderMap, upgrade: &HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, upgrade.clone());
}

/// Splices the client's and the upstream's upgraded connections until either side closes.
pub async fn splice(client: OnUpgrade, upstream: OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "an upgrade did not complete");
            return;
        }
    };
    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, "an upgraded connection ended with an error");
    }
}
