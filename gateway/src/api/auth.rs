//! API keys: `Authorization: Bearer <key>` on every `/v1` route except the signed status events.
//!
//! Keys are looked up by their SHA-256, so a lookup takes the same time whichever key is tried
//! and the keys themselves are not kept in a map that could be printed.

use std::collections::HashMap;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiError;

/// Who is calling: put into request extensions by [`require_key`].
#[derive(Debug, Clone)]
pub struct ApiClient {
    pub name: String,
    pub admin: bool,
}

#[derive(Debug, Default)]
pub struct ApiKeys {
    by_hash: HashMap<[u8; 32], ApiClient>,
}

impl ApiKeys {
    pub fn insert(&mut self, key: &str, client: ApiClient) {
        self.by_hash
            .insert(Sha256::digest(key.as_bytes()).into(), client);
    }

    pub fn lookup(&self, key: &str) -> Option<&ApiClient> {
        self.by_hash
            .get(&<[u8; 32]>::from(Sha256::digest(key.as_bytes())))
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

pub async fn require_key(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(header) = header else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send your API key as `Authorization: Bearer <key>`",
        )
        .field("Authorization"));
    };
    let key = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .unwrap_or("")
        .trim();
    let Some(client) = state.keys.lookup(key) else {
        metrics::counter!("gateway_auth_failures_total").increment(1);
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the API key is not valid",
        )
        .field("Authorization"));
    };
    request.extensions_mut().insert(client.clone());
    Ok(next.run(request).await)
}
