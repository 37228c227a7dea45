//! The tower layer that authenticates every public API request
//! (`admit.v1.*`) once, before any handler runs: the caller goes into the
//! request's extensions ([`super::Authenticated`]), or the request is
//! answered UNAUTHENTICATED. Health, reflection and the node-to-node
//! services (NodeRpc, Raft) pass untouched: they are the peer port's
//! business (docs/security.md). Imports `super` and http/tower only.

use std::task::{Context, Poll};

use futures_util::future::{ready, Either, Ready};

use super::{audit, Auth, Authenticated, ClientCerts};

/// The path prefix of the public API services.
const API_PREFIX: &str = "/admit.v1.";

/// Authenticates API requests when auth is configured; a no-op otherwise.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    auth: Option<Auth>,
}

impl AuthLayer {
    pub fn new(auth: Option<Auth>) -> AuthLayer {
        AuthLayer { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            auth: self.auth.clone(),
            inner,
        }
    }
}

#[derive(Clone, Debug)]
pub struct AuthService<S> {
    auth: Option<Auth>,
    inner: S,
}

impl<S, B, RB> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    RB: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let Some(auth) = &self.auth else {
            return Either::Left(self.inner.call(req));
        };
        if !req.uri().path().starts_with(API_PREFIX) {
            return Either::Left(self.inner.call(req));
        }
        // the verified chain of a TLS connection (the API port's acceptor),
        // or one a test put in directly
        let certs = req
            .extensions()
            .get::<ClientCerts>()
            .map(|c| c.0.clone())
            .or_else(|| {
                let chain = req
                    .extensions()
                    .get::<crate::transport::ConnInfo>()?
                    .peer_certs
                    .clone()?;
                Some(std::sync::Arc::new(
                    chain.iter().map(|d| d.as_ref().to_vec()).collect(),
                ))
            });
        let who = auth.identify(
            req.headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
            certs.as_deref().map(Vec::as_slice),
        );
        match who {
            Ok(Some(caller)) => {
                req.extensions_mut().insert(Authenticated(caller));
                Either::Left(self.inner.call(req))
            }
            Ok(None) => Either::Left(self.inner.call(req)),
            Err(e) => {
                audit::refused(req.uri().path(), &e);
                Either::Right(ready(Ok(e.into_status().into_http())))
            }
        }
    }
}
