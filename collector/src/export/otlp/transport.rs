//! Getting a signal to the receiver: the SDK's OTLP exporters for spans and log records, and
//! a protobuf request of our own for metrics (the SDK cannot carry histograms whose buckets
//! the kernel already counted: its metric data types have no public constructor), both
//! over the same endpoint, headers and timeout.
//!
//! Every export runs on a thread of ours, never on the runtime's workers: the HTTP client is
//! reqwest's blocking one (passed explicitly, so that no other crate's feature can swap in
//! an async client, which panics on such a thread: opentelemetry-rust #2673), driven by a
//! plain executor, since it must not run inside the runtime; gRPC (tonic) needs the
//! runtime: its channel is made inside it and its calls are driven by it.
use std::future::Future;

use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, metrics_service_client::MetricsServiceClient,
};
use prost::Message as _;
use tokio::runtime::Handle;
use tonic::{metadata::MetadataMap, transport::Channel};

use super::settings::{EXPORT_TIMEOUT, Protocol, Target};

/// Runs an export's future on the thread that calls: in the runtime for gRPC, outside it
/// for HTTP.
pub struct Runner {
    /// The runtime, for gRPC.
    runtime: Option<Handle>,
}

impl Runner {
    pub fn run<F: Future>(&self, export: F) -> F::Output {
        match &self.runtime {
            Some(runtime) => runtime.block_on(export),
            None => futures_executor::block_on(export),
        }
    }
}

/// The exporter `build` makes for `target`, and what runs its exports. Called on the export
/// thread; for gRPC inside the runtime (tonic's channel spawns its connection there).
pub fn exporter<E>(
    target: &Target,
    runtime: &Handle,
    build: impl FnOnce(&Target) -> Result<E, opentelemetry_otlp::ExporterBuildError>,
) -> Result<(E, Runner), String> {
    let runtime = (target.protocol == Protocol::Grpc).then(|| runtime.clone());
    let _inside = runtime.as_ref().map(Handle::enter);
    let exporter = build(target).map_err(|e| format!("cannot set up the OTLP exporter: {e}"))?;
    Ok((exporter, Runner { runtime }))
}

/// An SDK exporter builder set up for `target`: one body for the span and the log record
/// exporters, whose builders are distinct types with the same methods.
macro_rules! sdk_exporter {
    ($name:ident, $exporter:ty, $signal:literal) => {
        pub fn $name(target: &Target) -> Result<$exporter, opentelemetry_otlp::ExporterBuildError> {
            let builder = <$exporter>::builder();
            match target.protocol {
                Protocol::HttpProtobuf => builder
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_endpoint(target.url($signal))
                    .with_headers(target.headers.iter().cloned().collect())
                    .with_http_client(
                        blocking_client().map_err(opentelemetry_otlp::ExporterBuildError::InternalFailure)?,
                    )
                    .with_timeout(EXPORT_TIMEOUT)
                    .build(),
                Protocol::Grpc => builder
                    .with_tonic()
                    .with_endpoint(target.endpoint.clone())
                    .with_metadata(metadata(target))
                    .with_timeout(EXPORT_TIMEOUT)
                    .build(),
            }
        }
    };
}

sdk_exporter!(spans, opentelemetry_otlp::SpanExporter, "traces");
sdk_exporter!(logs, opentelemetry_otlp::LogExporter, "logs");

/// The blocking HTTP client, made on the thread that uses it (made or dropped inside the
/// runtime it panics).
fn blocking_client() -> Result<reqwest::blocking::Client, String> {
    reqwest::blocking::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot make the OTLP HTTP client: {e}"))
}

/// `target`'s headers as gRPC metadata (checked when the flag was parsed).
fn metadata(target: &Target) -> MetadataMap {
    let mut map = MetadataMap::new();
    for (key, value) in &target.headers {
        if let (Ok(key), Ok(value)) = (
            key.to_ascii_lowercase()
                .parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>(),
            value.parse(),
        ) {
            map.insert(key, value);
        }
    }
    map
}

/// Sends metric requests to `target`.
#[allow(clippy::large_enum_variant)] // one per agent
pub enum MetricsSender {
    Http {
        client: reqwest::blocking::Client,
        url: String,
        headers: Vec<(String, String)>,
    },
    Grpc {
        client: MetricsServiceClient<Channel>,
        metadata: MetadataMap,
        runtime: Handle,
    },
}

impl MetricsSender {
    /// Made on the export thread, as the exporters are.
    pub fn new(target: &Target, runtime: &Handle) -> Result<MetricsSender, String> {
        Ok(match target.protocol {
            Protocol::HttpProtobuf => MetricsSender::Http {
                client: blocking_client()?,
                url: target.url("metrics"),
                headers: target.headers.clone(),
            },
            Protocol::Grpc => {
                let _inside = runtime.enter();
                let channel = Channel::from_shared(target.endpoint.clone())
                    .map_err(|e| format!("{}: {e}", target.endpoint))?
                    .timeout(EXPORT_TIMEOUT)
                    .connect_lazy();
                MetricsSender::Grpc {
                    client: MetricsServiceClient::new(channel),
                    metadata: metadata(target),
                    runtime: runtime.clone(),
                }
            }
        })
    }

    pub fn send(&mut self, request: ExportMetricsServiceRequest) -> Result<(), String> {
        match self {
            MetricsSender::Http { client, url, headers } => {
                let mut post = client
                    .post(url.as_str())
                    .header("content-type", "application/x-protobuf")
                    .body(request.encode_to_vec());
                for (key, value) in headers.iter() {
                    post = post.header(key, value);
                }
                let response = post.send().map_err(|e| e.to_string())?;
                match response.status() {
                    s if s.is_success() => Ok(()),
                    s => Err(format!("the receiver answered {s}")),
                }
            }
            MetricsSender::Grpc {
                client,
                metadata,
                runtime,
            } => {
                let mut call = tonic::Request::new(request);
                *call.metadata_mut() = metadata.clone();
                runtime
                    .block_on(client.export(call))
                    .map(drop)
                    .map_err(|status| format!("the receiver answered {}: {}", status.code(), status.message()))
            }
        }
    }
}
