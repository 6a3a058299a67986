//! What can go wrong talking to a driver.

/// A failed call to a driver.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL given cannot name a driver.
    #[error("'{url}' is not a driver URL (try http://HOST:PORT): {message}")]
    Url { url: String, message: String },
    /// Nothing answered at the URL.
    #[error("could not reach the driver at {url}; is `quarry driver` or `quarry up` running?")]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// The driver refused or failed the call: its message, and the gRPC code that classifies it
    /// (`InvalidArgument` for bad SQL or a refused module, `Unauthenticated` for a missing or
    /// wrong token, `NotFound` for an unknown job or table).
    #[error("{message}")]
    Driver { code: tonic::Code, message: String },
    /// The driver answered with something this client cannot read (another protocol version).
    #[error("the driver's answer cannot be read: {message}")]
    Protocol { message: String },
    /// A local file (a token, a certificate, a module) could not be read.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The gRPC code of an error the driver returned.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Driver { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<tonic::Status> for Error {
    /// The driver's message, without gRPC framing.
    fn from(status: tonic::Status) -> Self {
        Error::Driver {
            code: status.code(),
            message: status.message().to_string(),
        }
    }
}

impl From<arrow_flight::error::FlightError> for Error {
    fn from(e: arrow_flight::error::FlightError) -> Self {
        match e {
            arrow_flight::error::FlightError::Tonic(status) => Error::from(*status),
            other => Error::Protocol {
                message: other.to_string(),
            },
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
