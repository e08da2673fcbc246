//! The OTLP flags, flattened into the command line (so the config file sets them too, as
//! `otlp_endpoint = ...`). The standard `OTEL_*` variables set them from the environment,
//! with the OpenTelemetry specification's meaning
//! (https://opentelemetry.io/docs/specs/otel/protocol/exporter/): one endpoint for all
//! signals (for HTTP the base to which `/v1/traces`, `/v1/metrics` and `/v1/logs` are
//! added), headers as `key=value` pairs with percent-encoded values.
use std::time::Duration;

use clap::Args;

#[derive(Clone, Debug, Args)]
pub struct OtlpArgs {
    /// Push traces, metrics (and with --otlp-logs, logs) over OTLP to this endpoint; off
    /// unless set. For http/protobuf the base URL (`/v1/traces`, `/v1/metrics`, `/v1/logs`
    /// are added), for grpc the server's URL. [example: --otlp-endpoint http://127.0.0.1:4318]
    #[arg(long = "otlp-endpoint", value_name = "URL", env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_parser = parse_endpoint)]
    pub endpoint: Option<String>,

    /// The OTLP transport: http/protobuf or grpc. [example: --otlp-protocol grpc]
    #[arg(long = "otlp-protocol", value_name = "PROTOCOL", env = "OTEL_EXPORTER_OTLP_PROTOCOL", default_value = "http/protobuf", value_parser = parse_protocol)]
    pub protocol: Protocol,

    /// Headers sent with every export, as key=value pairs separated by commas, values
    /// percent-encoded. [example: --otlp-headers 'authorization=Bearer%20abc,x-tenant=ops']
    #[arg(long = "otlp-headers", value_name = "KEY=VALUE,...", env = "OTEL_EXPORTER_OTLP_HEADERS", value_parser = parse_pairs)]
    pub headers: Option<Pairs>,

    /// How often the metrics are pushed; the default is --poll-interval.
    /// [example: --otlp-interval 15s]
    #[arg(long = "otlp-interval", value_name = "DURATION", env = "COLLECTOR_OTLP_INTERVAL", value_parser = parse_interval)]
    pub interval: Option<humantime::Duration>,

    /// Also push every telemetry event as an OTLP log record. [example: --otlp-logs]
    #[arg(long = "otlp-logs", env = "COLLECTOR_OTLP_LOGS")]
    pub logs: bool,

    /// The resource's service.name; without it, the one --otlp-resource-attributes gives,
    /// else `collector`. [example: --otlp-service-name node-agent]
    #[arg(long = "otlp-service-name", value_name = "NAME", env = "OTEL_SERVICE_NAME")]
    pub service_name: Option<String>,

    /// More resource attributes, as key=value pairs separated by commas, values
    /// percent-encoded; they override the agent's own (host.name, ...), and service.name
    /// only without --otlp-service-name. [example: --otlp-resource-attributes deployment.environment.name=prod]
    #[arg(long = "otlp-resource-attributes", value_name = "KEY=VALUE,...", env = "OTEL_RESOURCE_ATTRIBUTES", value_parser = parse_pairs)]
    pub resource_attributes: Option<Pairs>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    HttpProtobuf,
    Grpc,
}

/// Ordered `key=value` pairs (`--otlp-headers`, `--otlp-resource-attributes`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pairs(pub Vec<(String, String)>);

/// What an OTLP signal is pushed to, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub protocol: Protocol,
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
}

/// Per-request timeout of every export (the specification's default).
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

impl OtlpArgs {
    /// Where to push, if OTLP export is on.
    pub fn target(&self) -> Option<Target> {
        Some(Target {
            protocol: self.protocol,
            endpoint: self.endpoint.clone()?,
            headers: self.headers.clone().unwrap_or_default().0,
        })
    }
}

impl Target {
    /// The URL of one signal's export: for HTTP the base with `/v1/{signal}` added, for
    /// gRPC the endpoint itself (the service says which signal).
    pub fn url(&self, signal: &str) -> String {
        match self.protocol {
            Protocol::HttpProtobuf => format!("{}/v1/{signal}", self.endpoint.trim_end_matches('/')),
            Protocol::Grpc => self.endpoint.clone(),
        }
    }
}

fn parse_endpoint(s: &str) -> Result<String, String> {
    let url =
        reqwest::Url::parse(s).map_err(|e| format!("'{s}' is not a URL ({e}); write e.g. http://127.0.0.1:4318"))?;
    match url.scheme() {
        "http" if url.host().is_some() => Ok(s.to_owned()),
        "http" => Err(format!("'{s}' names no host; write e.g. http://127.0.0.1:4318")),
        "https" => Err(format!(
            "'{s}': https is not supported yet; push to a collector over http (e.g. one on this host or its node)"
        )),
        other => Err(format!(
            "'{s}': the scheme is {other}, not http; write e.g. http://127.0.0.1:4318"
        )),
    }
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    match s {
        "http/protobuf" => Ok(Protocol::HttpProtobuf),
        "grpc" => Ok(Protocol::Grpc),
        "http/json" => Err("http/json is not supported; use http/protobuf or grpc".into()),
        _ => Err(format!("'{s}' is not an OTLP protocol; use http/protobuf or grpc")),
    }
}

fn parse_interval(s: &str) -> Result<humantime::Duration, String> {
    let d: humantime::Duration = s
        .parse()
        .map_err(|e| format!("'{s}' is not a duration ({e}); write e.g. 15s"))?;
    if d.as_millis() < 100 {
        return Err("the push interval must be at least 100ms".into());
    }
    Ok(d)
}

/// `key=value,...` with percent-encoded values (W3C Baggage's format, which the
/// specification uses for both variables).
fn parse_pairs(s: &str) -> Result<Pairs, String> {
    let mut pairs = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| format!("'{item}' is not key=value"))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("'{item}' has no key before '='"));
        }
        let value = percent_encoding::percent_decode_str(value.trim())
            .decode_utf8()
            .map_err(|_| format!("the value of '{key}' is not UTF-8 once percent-decoded"))?;
        pairs.push((key.to_owned(), value.into_owned()));
    }
    Ok(Pairs(pairs))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        otlp: OtlpArgs,
    }

    fn parse(args: &[&str]) -> Result<OtlpArgs, String> {
        Cli::try_parse_from(std::iter::once("collector").chain(args.iter().copied()))
            .map(|c| c.otlp)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn off_unless_an_endpoint_is_given() {
        assert!(std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none());
        let args = parse(&[]).unwrap();
        assert_eq!(args.target(), None);
    }

    #[test]
    fn http_urls_add_the_signal_path_and_grpc_keeps_the_endpoint() {
        let args = parse(&["--otlp-endpoint", "http://127.0.0.1:4318/"]).unwrap();
        let target = args.target().unwrap();
        assert_eq!(target.url("traces"), "http://127.0.0.1:4318/v1/traces");
        let args = parse(&["--otlp-endpoint", "http://h:4317", "--otlp-protocol", "grpc"]).unwrap();
        assert_eq!(args.target().unwrap().url("metrics"), "http://h:4317");
    }

    #[test]
    fn headers_and_attributes_are_pairs_with_percent_decoded_values() {
        let args = parse(&[
            "--otlp-endpoint",
            "http://h:1",
            "--otlp-headers",
            "authorization=Bearer%20abc, x-tenant=ops",
            "--otlp-resource-attributes",
            "a=1,b=x%3Dy",
        ])
        .unwrap();
        assert_eq!(
            args.target().unwrap().headers,
            [
                ("authorization".into(), "Bearer abc".into()),
                ("x-tenant".into(), "ops".into())
            ]
        );
        assert_eq!(
            args.resource_attributes.unwrap().0,
            [("a".into(), "1".into()), ("b".into(), "x=y".into())]
        );
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        for (args, needle) in [
            (&["--otlp-endpoint", "127.0.0.1:4318"][..], "not a URL"),
            (&["--otlp-endpoint", "https://h:4318"][..], "https is not supported yet"),
            (&["--otlp-endpoint", "ftp://h"][..], "the scheme is ftp"),
            (&["--otlp-protocol", "http/json"][..], "http/json is not supported"),
            (&["--otlp-protocol", "udp"][..], "'udp' is not an OTLP protocol"),
            (&["--otlp-headers", "novalue"][..], "'novalue' is not key=value"),
            (&["--otlp-headers", "=v"][..], "has no key"),
            (&["--otlp-interval", "10ms"][..], "at least 100ms"),
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }
}
