//! OTLP export of the gateway's spans: a tracer provider with a batch
//! processor and the gRPC (tonic) exporter, and the `tracing` layer that
//! feeds it. Set up with the logging when `tracing.otlp_endpoint` is set;
//! [`Exporter::shutdown`] sends what is still queued before the process
//! exits.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tonic::transport::ClientTlsConfig;
use tracing::{Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::SPAN_TARGET;
use crate::config::Tracing;

/// The span pipeline to the collector.
#[derive(Debug)]
pub struct Exporter {
    provider: SdkTracerProvider,
}

#[derive(Debug, thiserror::Error)]
#[error("tracing.otlp_endpoint {endpoint}: {reason}")]
pub struct ExportError {
    endpoint: String,
    reason: String,
}

impl Exporter {
    /// The exporter of `config`; `None` when no endpoint is set. Must run
    /// inside the tokio runtime: the gRPC channel's worker is spawned on
    /// it (the channel connects lazily, so a collector that is down
    /// costs dropped batches, not a failed start).
    pub fn start(config: &Tracing) -> Result<Option<Self>, ExportError> {
        let Some(endpoint) = &config.otlp_endpoint else {
            return Ok(None);
        };
        let mut builder = SpanExporter::builder().with_tonic().with_endpoint(endpoint.to_string());
        if endpoint.scheme_str() == Some("https") {
            // The roots the upstream channels trust too.
            builder = builder.with_tls_config(ClientTlsConfig::new().with_webpki_roots());
        }
        let exporter =
            builder.build().map_err(|e| ExportError { endpoint: endpoint.to_string(), reason: e.to_string() })?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name(config.service_name.clone()).build())
            .build();
        Ok(Some(Self { provider }))
    }

    /// The layer that turns the gateway's spans (and nothing else) into
    /// OpenTelemetry spans; whatever the log level, they are exported.
    pub fn layer<S>(&self) -> impl Layer<S>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("protogate"))
            // Parents are explicit (telemetry::span); nothing reads the
            // current OpenTelemetry context, and timings are the spans'.
            .with_context_activation(false)
            .with_tracked_inactivity(false)
            .with_location(false)
            .with_threads(false)
            .with_level(false)
            .with_target(false)
            .with_filter(Targets::new().with_target(SPAN_TARGET, Level::INFO))
    }

    /// Exports the spans still queued and stops the exporter. The
    /// processor's thread needs the runtime to send, so this waits off it.
    pub async fn shutdown(self) {
        let provider = self.provider;
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "exporting the last spans"),
            Err(err) => tracing::warn!(error = %err, "exporting the last spans"),
        }
    }
}
