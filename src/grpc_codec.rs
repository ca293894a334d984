//! The gRPC codec of every riskgate service and client: prost's, with a smaller yield
//! threshold for streams.
//!
//! tonic hands a stream's encoded messages to HTTP/2 only when no further message is ready or
//! the buffer passes the yield threshold (32 KiB by default): a burst of trade-session answers
//! then waits for the last of them, and the bot with it. At 4 KiB answers leave in groups of
//! two or three (figures: docs/benchmarks.md, "The stream codec's yield threshold").

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
