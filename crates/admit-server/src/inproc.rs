//! An in-process handle on a running node's public API, for edges that live
//! in the same process (the webhook receiver): the same handlers as the gRPC
//! calls, so the same validation, self-protection, routing and Raft writes,
//! without a network hop. May import the services and `ctx` only.

use std::sync::Arc;

use admit_proto::v1 as pb;
use admit_proto::v1::admin_server::Admin;
use admit_proto::v1::admit_send_server::AdmitSend;
use tonic::{Request, Response, Status};

use crate::ctx::Ctx;
use crate::service::admin::AdminService;
use crate::service::admit::AdmitService;

/// Calls into a running node as a gRPC client would, in process. Cheap to
/// clone; obtained from [`crate::Running::in_process`].
#[derive(Debug, Clone)]
pub struct InProcess {
    admin: AdminService,
    admit: AdmitService,
}

impl InProcess {
    pub(crate) fn new(ctx: Arc<Ctx>) -> InProcess {
        InProcess {
            admin: AdminService { ctx: ctx.clone() },
            admit: AdmitService { ctx },
        }
    }

    /// `Admin.ApplyEvent`.
    pub async fn apply_event(
        &self,
        r: pb::ApplyEventRequest,
    ) -> Result<pb::ApplyEventResponse, Status> {
        self.admin
            .apply_event(Request::new(r))
            .await
            .map(Response::into_inner)
    }

    /// `Admin.RegisterNumber`.
    pub async fn register_number(
        &self,
        r: pb::RegisterNumberRequest,
    ) -> Result<pb::RegisterNumberResponse, Status> {
        self.admin
            .register_number(Request::new(r))
            .await
            .map(Response::into_inner)
    }

    /// `Admin.GetStatus`.
    pub async fn get_status(
        &self,
        r: pb::GetStatusRequest,
    ) -> Result<pb::GetStatusResponse, Status> {
        self.admin
            .get_status(Request::new(r))
            .await
            .map(Response::into_inner)
    }

    /// `AdmitSend.Admit`.
    pub async fn admit(&self, r: pb::AdmitRequest) -> Result<pb::AdmitResponse, Status> {
        self.admit
            .admit(Request::new(r))
            .await
            .map(Response::into_inner)
    }

    /// `AdmitSend.RecordInbound`.
    pub async fn record_inbound(
        &self,
        r: pb::RecordInboundRequest,
    ) -> Result<pb::RecordInboundResponse, Status> {
        self.admit
            .record_inbound(Request::new(r))
            .await
            .map(Response::into_inner)
    }

    /// `AdmitSend.ReportOutcome`.
    pub async fn report_outcome(
        &self,
        r: pb::ReportOutcomeRequest,
    ) -> Result<pb::ReportOutcomeResponse, Status> {
        self.admit
            .report_outcome(Request::new(r))
            .await
            .map(Response::into_inner)
    }

    /// The `phone_number_id` registered with these display digits
    /// (`RegisterNumber.display_phone_number`), from replicated state: every
    /// shard's leader is asked (see `Reads::number_by_display`). UNIMPLEMENTED
    /// when a node of an older build could not answer and no other shard
    /// holds the digits (mid-upgrade).
    pub async fn number_by_display(&self, digits: &str) -> Result<Option<String>, Status> {
        let found = self.admin.ctx.reads.number_by_display(digits).await?;
        Ok(found.map(|n| n.to_string()))
    }
}
