//! CRIU's RPC messages as the stand-in (`migrate` run as `criu swrk`)
//! decodes them from the runtime's socket, and the responses it sends
//! (decoded back as runc would), with an encode/decode round trip.

#![no_main]

use libfuzzer_sys::fuzz_target;
use migrate::runtime::swrk::{CriuReq, CriuResp};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = CriuReq::decode(data) {
        let again = CriuReq::decode(&req.encode_to_vec()[..]).expect("re-encoded request decodes");
        assert_eq!(again, req);
    }
    if let Ok(resp) = CriuResp::decode(data) {
        let again = CriuResp::decode(&resp.encode_to_vec()[..]).expect("re-encoded response decodes");
        assert_eq!(again, resp);
    }
});
