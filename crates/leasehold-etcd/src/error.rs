//! etcd client errors as [`LockError`]s.

use leasehold::LockError;

pub(crate) const BACKEND: &str = "etcd";

/// A failed request: transient when another try may succeed (no leader, a member down, a
/// deadline), permanent otherwise (bad credentials, a permission, a malformed request).
pub(crate) fn map(error: etcd_client::Error) -> LockError {
    use etcd_client::Error as E;
    use tonic::Code;
    let transient = match &error {
        E::GRpcStatus(status) => matches!(
            status.code(),
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::Aborted
                | Code::ResourceExhausted
                | Code::Unknown
                | Code::Internal
        ),
        E::TransportError(_)
        | E::IoError(_)
        | E::WatchError(_)
        | E::LeaseKeepAliveError(_)
        | E::EndpointError(_) => true,
        _ => false,
    };
    if transient {
        LockError::transient(BACKEND, error)
    } else {
        LockError::permanent(BACKEND, error)
    }
}

/// Whether `error` says the lease named in the request does not exist (expired or revoked).
pub(crate) fn is_lease_gone(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => status.code() == tonic::Code::NotFound,
        etcd_client::Error::LeaseKeepAliveError(message) => message.contains("not found"),
        _ => false,
    }
}

/// Whether `error` says the request never left: the connection to the member it was routed to
/// could not be made (so any request, a write too, can be sent again).
pub(crate) fn never_sent(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::Unavailable && status.message().contains("connect error")
        }
        _ => false,
    }
}
