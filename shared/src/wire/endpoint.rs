//! Every request as a type that names its reply, so that a host asks
//! `client.call(Info)` and gets a [`BoxInfo`], never a [`Reply`] to check by hand.
//!
//! The wire still carries [`RequestBody`] and [`Reply`]; [`Endpoint::reply`] is the one
//! place a reply of the wrong kind is recognised (a box that breaks the protocol).

use super::{
    BoxInfo, FlashRequest, FlashTarget, Reply, RequestBody, SessionRequest, StationRequest, Thumbnail,
};

/// A request and the answer it gets.
pub trait Endpoint {
    /// What a box that carried it out answers.
    type Reply;
    /// Which part of the box answers, for messages and routing.
    const OWNER: Owner;
    /// The request on the wire.
    fn body(self) -> RequestBody;
    /// The typed answer, or the reply back when it is of another kind.
    fn reply(reply: Reply) -> Result<Self::Reply, Box<Reply>>;
}

/// Who on the box answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The port thread, which keeps the session.
    Session,
    /// The station, between two parts.
    Station,
    /// The flasher, which owns the store.
    Flash,
}

impl RequestBody {
    /// Which part of the box answers this request.
    pub fn owner(&self) -> Owner {
        match self {
            RequestBody::Session(_) => Owner::Session,
            RequestBody::Station(_) => Owner::Station,
            RequestBody::Flash(_) => Owner::Flash,
        }
    }
}

/// `endpoint!(doc Type { fields } => Owner request, reply pattern => value, ReplyType)`.
macro_rules! endpoint {
    (@struct $(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name;
    };
    (@struct $(#[$doc:meta])* $name:ident { $($field:ident: $ty:ty),* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        #[allow(missing_docs)]
        pub struct $name { $(pub $field: $ty),* }
    };
    ($(#[$doc:meta])* $name:ident $({ $($field:ident: $ty:ty),* })? => $owner:ident $request:expr,
     $pattern:pat => $value:expr, $reply:ty) => {
        endpoint!(@struct $(#[$doc])* $name $({ $($field: $ty),* })?);

        impl Endpoint for $name {
            type Reply = $reply;
            const OWNER: Owner = Owner::$owner;

            fn body(self) -> RequestBody {
                let $name $({ $($field),* })? = self;
                $request.into()
            }

            fn reply(reply: Reply) -> Result<$reply, Box<Reply>> {
                match reply {
                    $pattern => Ok($value),
                    other => Err(Box::new(other)),
                }
            }
        }
    };
}

endpoint!(
    /// Open the session; answered with the box's protocol version.
    Hello { protocol: u16 } => Session SessionRequest::Hello { protocol },
    Reply::Hello { protocol } => protocol, u16
);
endpoint!(
    /// Start or stop the results stream.
    Watch { on: bool } => Session SessionRequest::Watch(on), Reply::Done => (), ()
);
endpoint!(
    /// Rebuild the box's pipeline; the link drops and comes back.
    Restart => Session SessionRequest::Restart, Reply::Restarting => (), ()
);
endpoint!(
    /// Versions, model, source, threshold, uptime.
    Info => Station StationRequest::Info, Reply::Info(i) => *i, BoxInfo
);
endpoint!(
    /// Counters since the box started, the run permit and the alarms holding the line.
    Status => Station StationRequest::Status, Reply::Status(s) => s, super::Status
);
endpoint!(
    /// Fire the reject output once.
    TestReject => Station StationRequest::TestReject, Reply::Done => (), ()
);
endpoint!(
    /// Change the decision threshold.
    SetThreshold { value: f32 } => Station StationRequest::SetThreshold(value), Reply::Done => (), ()
);
endpoint!(
    /// Change the reject timing.
    SetReject { delay_ms: f32, pulse_ms: f32 } => Station StationRequest::SetReject { delay_ms, pulse_ms },
    Reply::Done => (), ()
);
endpoint!(
    /// Clear a raised line-stop output.
    ClearLineStop => Station StationRequest::ClearLineStop, Reply::Done => (), ()
);
endpoint!(
    /// The `n`-th most recent rejected part with a thumbnail, if there are that many.
    LastNg { n: u8 } => Station StationRequest::LastNg(n), Reply::LastNg(t) => t, Option<Thumbnail>
);
endpoint!(
    /// The newest log lines, oldest first.
    Logs => Station StationRequest::Logs, Reply::Logs(l) => l, Vec<String>
);
endpoint!(
    /// The latest frame's thumbnail, if one was captured.
    Snapshot => Station StationRequest::Snapshot, Reply::Snapshot(t) => t, Option<Thumbnail>
);
endpoint!(
    /// Start or resume an upload; answered with the bytes the box already holds.
    FlashBegin { target: FlashTarget, size: u64, sha256: String } => Flash FlashRequest::Begin { target, size, sha256 },
    Reply::FlashOffset(at) => at, u64
);
endpoint!(
    /// Upload bytes at `offset`; answered with the bytes the box now holds.
    FlashChunk { offset: u64, data: Vec<u8> } => Flash FlashRequest::Chunk { offset, data },
    Reply::FlashOffset(at) => at, u64
);
endpoint!(
    /// Verify and switch to the upload: a model answers with its description
    /// ([`Committed::Model`]), a firmware by restarting into it ([`Committed::Firmware`]).
    FlashCommit => Flash FlashRequest::Commit, r @ (Reply::Flashed(_) | Reply::Restarting) => Committed::from(r), Committed
);

/// What a [`FlashCommit`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// The box inspects with the flashed model (its description).
    Model(String),
    /// The box restarts into the flashed firmware, on trial.
    Firmware,
}

impl From<Reply> for Committed {
    fn from(r: Reply) -> Self {
        match r {
            Reply::Flashed(name) => Committed::Model(name),
            _ => Committed::Firmware,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_endpoint_takes_its_own_reply_and_hands_back_any_other() {
        let status = super::super::Status {
            counters: super::super::Counters { ng: 3, ..Default::default() },
            ..Default::default()
        };
        assert_eq!(Status::reply(Reply::Status(status)).unwrap().counters.ng, 3);
        assert_eq!(Status::reply(Reply::Done), Err(Box::new(Reply::Done)));
        assert_eq!(TestReject::reply(Reply::Done), Ok(()));
        assert_eq!(LastNg::reply(Reply::Snapshot(None)), Err(Box::new(Reply::Snapshot(None))));
        assert_eq!(FlashCommit::reply(Reply::Restarting), Ok(Committed::Firmware));
        assert_eq!(FlashCommit::reply(Reply::Flashed("m".into())), Ok(Committed::Model("m".into())));
        assert_eq!(FlashCommit::reply(Reply::FlashOffset(3)), Err(Box::new(Reply::FlashOffset(3))));
    }

    #[test]
    fn each_endpoint_is_routed_to_its_owner() {
        let body = SetThreshold { value: 0.5 }.body();
        assert_eq!(body, RequestBody::Station(StationRequest::SetThreshold(0.5)));
        assert_eq!(body.owner(), SetThreshold::OWNER);
        assert_eq!(Watch { on: true }.body().owner(), Owner::Session);
        assert_eq!(FlashChunk { offset: 0, data: vec![] }.body().owner(), Owner::Flash);
        assert_eq!(FlashCommit::OWNER, Owner::Flash);
    }
}
