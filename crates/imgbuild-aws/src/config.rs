//! Loading the SDK configuration shared by the EC2 and S3 clients.

use aws_config::{BehaviorVersion, ConfigLoader, Region, SdkConfig};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

/// `aws_config::defaults` with imgbuild's HTTP client (rustls on ring).
///
/// Credentials and region come from the standard chain (environment,
/// profiles, SSO, web identity, IMDS).
pub fn sdk_loader() -> ConfigLoader {
    let http = aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
    aws_config::defaults(BehaviorVersion::latest()).http_client(http)
}

/// The SDK configuration for one service: `region` overrides the chain's;
/// the endpoint is `endpoint_url`, else `AWS_ENDPOINT_URL_<SERVICE>`, else
/// `AWS_ENDPOINT_URL` (returned so callers can switch to path-style
/// addressing for S3-compatible servers).
pub async fn load(
    service_env: &str,
    region: Option<&str>,
    endpoint_url: Option<&str>,
) -> Result<(SdkConfig, Option<String>), EndpointError> {
    let endpoint = endpoint_url
        .map(str::to_string)
        .or_else(|| std::env::var(format!("AWS_ENDPOINT_URL_{service_env}")).ok())
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .filter(|e| !e.is_empty());
    let mut loader = sdk_loader();
    if let Some(endpoint) = &endpoint {
        check_endpoint(endpoint)?;
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(region) = region.filter(|r| !r.is_empty()) {
        loader = loader.region(Region::new(region.to_string()));
    }
    Ok((loader.load().await, endpoint))
}

/// An endpoint that is not an http(s) URL. The URL itself is left out of
/// the message: it may carry credentials (`scheme://user:secret@host`).
#[derive(Debug, thiserror::Error)]
#[error("endpoint_url must be an http:// or https:// URL")]
pub struct EndpointError;

fn check_endpoint(endpoint: &str) -> Result<(), EndpointError> {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") { Ok(()) } else { Err(EndpointError) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn endpoints_must_be_http_and_are_never_echoed() {
        assert!(super::check_endpoint("http://127.0.0.1:5000").is_ok());
        let err = super::check_endpoint("ftp://user:secret@host").unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
    }
}
