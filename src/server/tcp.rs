//! TCP (and UDP when the fast path is off) through hickory-server's `Server`, with our own
//! `RequestHandler`: hickory owns connections, framing, pipelining and idle timeouts; the
//! answer comes from the same [`Engine`] as the UDP fast path, so both transports answer alike.

use hickory_proto::op::Message;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::SharedEngine;
use crate::ops::metrics::Proto;

/// The hickory `RequestHandler` that hands each request to the [`Engine`].
pub struct HickoryHandler {
    pub engine: SharedEngine,
}

#[async_trait::async_trait]
impl RequestHandler for HickoryHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let proto = if request.protocol() == Protocol::Udp {
            Proto::Udp
        } else {
            Proto::Tcp
        };
        let fail = || {
            let mut metadata = hickory_proto::op::Metadata::new(
                request.metadata.id,
                hickory_proto::op::MessageType::Response,
                hickory_proto::op::OpCode::Query,
            );
            metadata.response_code = hickory_proto::op::ResponseCode::ServFail;
            ResponseInfo::from(hickory_proto::op::Header {
                metadata,
                counts: Default::default(),
            })
        };
        let engine = self.engine.load_full();
        let Some(bytes) = engine
            .answer(request.as_slice(), proto, request.src())
            .await
        else {
            return fail();
        };
        // Our reply is already a complete message; hickory's response API takes records, so
        // decode it and let hickory re-encode it (the question is re-emitted from the request's
        // own bytes, keeping its case).
        let msg = match Message::from_vec(&bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "could not decode our own reply");
                return fail();
            }
        };
        // Error replies to unparsable questions carry no question (as CoreDNS's): keep that.
        let empty = hickory_server::zone_handler::Queries::read(
            &mut hickory_proto::serialize::binary::BinDecoder::new(&[]),
            0,
        );
        let queries = match (&empty, msg.queries.is_empty()) {
            (Ok(e), true) => e,
            _ => &request.queries,
        };
        let mut builder = MessageResponseBuilder::new(queries, None);
        if let Some(e) = &msg.edns {
            builder.edns(e);
        }
        let resp = builder.build(
            msg.metadata,
            msg.answers.iter(),
            msg.authorities.iter(),
            std::iter::empty(),
            msg.additionals.iter(),
        );
        match response.send_response(resp).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "could not send reply");
                fail()
            }
        }
    }
}
