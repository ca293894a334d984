//! The one mapping from the service's errors to gRPC statuses. Exhaustive on purpose: a new
//! error variant does not compile until it is given a code here.

use tonic::Status;

use crate::error::Error;
use crate::store::StoreError;

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::InvalidAccountId(_)
            | Error::InvalidPermit { .. }
            | Error::MissingField { .. }
            | Error::FieldTooLong { .. }
            | Error::InvalidEnum { .. }
            | Error::InvalidArgument(_)
            | Error::BatchTooLarge { .. }
            | Error::NestedBatch
            | Error::EmptySessionMessage => Status::invalid_argument(message),
            Error::AccountLimit { .. }
            | Error::RateLimited { .. }
            | Error::ClientOverloaded { .. }
            | Error::TooManyWatchers { .. } => Status::resource_exhausted(message),
            Error::Unauthenticated(_) | Error::CredentialsRevoked(_) => {
                Status::unauthenticated(message)
            }
            Error::RoleRequired { .. }
            | Error::AccountNotGranted { .. }
            | Error::RoleRevoked { .. } => Status::permission_denied(message),
            Error::WatcherLagged { .. } => Status::aborted(message),
            Error::Overloaded { .. } | Error::WatchShutdown { .. } | Error::SessionShutdown => {
                Status::unavailable(message)
            }
            Error::UnknownAccount(_) | Error::UnknownGroup(_) => Status::not_found(message),
            Error::HistoryExpired { .. } | Error::HistoryAhead { .. } => {
                Status::out_of_range(message)
            }
            Error::Loading | Error::Store(StoreError::Unavailable(_)) => {
                Status::unavailable(message)
            }
            Error::Store(StoreError::Unusable { .. }) | Error::Internal(_) => {
                Status::internal(message)
            }
        }
    }
}
