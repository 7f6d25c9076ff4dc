//! API-key check for `--api-key`: every `/v1` request must carry `Authorization: Bearer <key>`.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use subtle::ConstantTimeEq;

use crate::api_error::ApiError;

/// Checks the bearer token of `headers` against `expected`, in time independent of where the
/// two differ (the lengths may leak, the contents do not).
pub fn check_bearer(headers: &HeaderMap, expected: &str) -> Result<(), ApiError> {
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(AUTHORIZATION, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn only_the_exact_bearer_key_passes() {
        assert_eq!(
            check_bearer(&headers(Some("Bearer s3cret")), "s3cret"),
            Ok(())
        );
        for wrong in [
            None,
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("s3cret"),
            Some("Basic s3cret"),
        ] {
            assert_eq!(
                check_bearer(&headers(wrong), "s3cret"),
                Err(ApiError::Unauthorized),
                "{wrong:?}"
            );
        }
    }
}
