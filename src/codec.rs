//! The gRPC codec of every riskgate service and client: prost's, with a smaller yield
//! threshold for streams.
//!
//! tonic encodes the messages of a stream into one buffer and hands it to HTTP/2 only when the
//! stream has no further message ready or the buffer passes the yield threshold, 32 KiB by
//! default. When a trade session's answers are ready in a burst, that held up to 28 answers to
//! batches of 32 checks (1.2 KiB each) before the first of them left: a bot keeping 64 batches
//! in flight then waited with nothing to send, and so did the server (measured: its core 72-75%
//! busy at 0.71-0.78M checks/s; with 256 batches in flight, saturated at 0.95-1.0M). At 4 KiB,
//! answers leave in groups of two or three; HTTP/2 still writes whatever frames are queued in
//! one system call. The same holds for a bot's stream of requests and a watcher's events.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::ProstCodec;

/// Bytes of encoded messages after which a stream's buffer is handed to HTTP/2 (tonic's own
/// default is 32 KiB).
const YIELD_THRESHOLD: usize = 4 * 1024;
/// A call's first buffer, as tonic's default.
const BUFFER_SIZE: usize = 8 * 1024;

/// Prost's codec with riskgate's buffer settings (named by the generated code).
#[derive(Debug, Clone)]
pub struct RiskgateCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for RiskgateCodec<T, U> {
    fn default() -> Self {
        RiskgateCodec(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

impl<T, U> Codec for RiskgateCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}
