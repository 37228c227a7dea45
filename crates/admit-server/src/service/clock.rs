//! `admit.v1.TestClock`: the controllable clock of test mode (section 12, docs/rules.md).

use std::sync::Arc;

use admit_proto::v1 as pb;
use admit_proto::v1::test_clock_server::TestClock;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::handle;
use crate::clock::ClockError;
use crate::convert::{ms, ts_in};
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::relay;

#[derive(Debug, Clone)]
pub struct ClockService {
    pub(crate) ctx: Arc<Ctx>,
}

fn clock_err(e: ClockError) -> ApiError {
    match e {
        ClockError::NotTestMode => ApiError::FailedPrecondition(e.to_string()),
        ClockError::Backwards { .. } => ApiError::invalid("now_unix_ms", e.to_string()),
        ClockError::TooFar { .. } => ApiError::invalid("by_ms", e.to_string()),
    }
}

impl ClockService {
    fn reply(&self) -> pb::ClockResponse {
        pb::ClockResponse {
            now_unix_ms: ms(self.ctx.now()),
            test_mode: self.ctx.routing.clock.is_test(),
        }
    }
}

#[tonic::async_trait]
impl TestClock for ClockService {
    #[instrument(skip_all)]
    async fn set_clock(
        &self,
        request: Request<pb::SetClockRequest>,
    ) -> Result<Response<pb::ClockResponse>, Status> {
        handle(&self.ctx, &request, async {
            if !self.ctx.routing.clock.is_test() {
                return Err(clock_err(ClockError::NotTestMode));
            }
            let to = ts_in("now_unix_ms", request.get_ref().now_unix_ms)?;
            let now = self.ctx.routing.clock.set(to).map_err(clock_err)?;
            relay::set_clock_everywhere(&self.ctx.routing, now).await?;
            tracing::debug!(now = now.ms(), "test clock set");
            Ok(self.reply())
        })
        .await
    }

    #[instrument(skip_all)]
    async fn advance_clock(
        &self,
        request: Request<pb::AdvanceClockRequest>,
    ) -> Result<Response<pb::ClockResponse>, Status> {
        handle(&self.ctx, &request, async {
            if !self.ctx.routing.clock.is_test() {
                return Err(clock_err(ClockError::NotTestMode));
            }
            let by = u64::try_from(request.get_ref().by_ms)
                .map_err(|_| ApiError::invalid("by_ms", "must not be negative"))?;
            let now = self.ctx.routing.clock.advance(by).map_err(clock_err)?;
            relay::set_clock_everywhere(&self.ctx.routing, now).await?;
            tracing::debug!(now = now.ms(), "test clock advanced");
            Ok(self.reply())
        })
        .await
    }

    async fn get_clock(
        &self,
        request: Request<pb::GetClockRequest>,
    ) -> Result<Response<pb::ClockResponse>, Status> {
        handle(&self.ctx, &request, async { Ok(self.reply()) }).await
    }
}
