//! MongoDB's error codes and names, and the reply document of a failed command.

use bson::{Document, doc};

/// The codes this server answers with (the numbers and names MongoDB uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    BadValue,
    FailedToParse,
    Unauthorized,
    AuthenticationFailed,
    IllegalOperation,
    InvalidBson,
    CommandNotFound,
    MechanismUnavailable,
    UnsupportedOpQueryCommand,
    BsonObjectTooLarge,
    NotImplemented,
    InternalError,
    InvalidNamespace,
    CursorNotFound,
    InvalidOptions,
    NamespaceExists,
    ImmutableField,
    TypeMismatch,
    PathNotViable,
    DuplicateKey,
    ShutdownInProgress,
    NamespaceNotFound,
    IndexNotFound,
    CannotCreateIndex,
    IndexOptionsConflict,
    IndexKeySpecsConflict,
    CannotIndexParallelArrays,
    BadRegex,
    ConflictingUpdateOperators,
    UnrecognizedStage,
}

impl Code {
    pub fn number(self) -> i32 {
        match self {
            Code::BadValue => 2,
            Code::FailedToParse => 9,
            Code::Unauthorized => 13,
            Code::AuthenticationFailed => 18,
            Code::IllegalOperation => 20,
            Code::InvalidBson => 22,
            Code::CommandNotFound => 59,
            Code::MechanismUnavailable => 334,
            Code::UnsupportedOpQueryCommand => 352,
            Code::BsonObjectTooLarge => 10334,
            Code::NotImplemented => 238,
            Code::InternalError => 1,
            Code::InvalidNamespace => 73,
            Code::CursorNotFound => 43,
            Code::InvalidOptions => 72,
            Code::NamespaceExists => 48,
            Code::ImmutableField => 66,
            Code::TypeMismatch => 14,
            Code::PathNotViable => 28,
            Code::DuplicateKey => 11000,
            Code::ShutdownInProgress => 91,
            Code::NamespaceNotFound => 26,
            Code::IndexNotFound => 27,
            Code::CannotCreateIndex => 67,
            Code::IndexOptionsConflict => 85,
            Code::IndexKeySpecsConflict => 86,
            Code::CannotIndexParallelArrays => 171,
            Code::BadRegex => 51091,
            Code::ConflictingUpdateOperators => 40,
            Code::UnrecognizedStage => 40324,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Code::BadValue => "BadValue",
            Code::FailedToParse => "FailedToParse",
            Code::Unauthorized => "Unauthorized",
            Code::AuthenticationFailed => "AuthenticationFailed",
            Code::IllegalOperation => "IllegalOperation",
            Code::InvalidBson => "InvalidBSON",
            Code::CommandNotFound => "CommandNotFound",
            Code::MechanismUnavailable => "MechanismUnavailable",
            Code::UnsupportedOpQueryCommand => "UnsupportedOpQueryCommand",
            Code::BsonObjectTooLarge => "BSONObjectTooLarge",
            Code::NotImplemented => "NotImplemented",
            Code::InternalError => "InternalError",
            Code::InvalidNamespace => "InvalidNamespace",
            Code::CursorNotFound => "CursorNotFound",
            Code::InvalidOptions => "InvalidOptions",
            Code::NamespaceExists => "NamespaceExists",
            Code::ImmutableField => "ImmutableField",
            Code::TypeMismatch => "TypeMismatch",
            Code::PathNotViable => "PathNotViable",
            Code::DuplicateKey => "DuplicateKey",
            Code::ShutdownInProgress => "ShutdownInProgress",
            Code::NamespaceNotFound => "NamespaceNotFound",
            Code::IndexNotFound => "IndexNotFound",
            Code::CannotCreateIndex => "CannotCreateIndex",
            Code::IndexOptionsConflict => "IndexOptionsConflict",
            Code::IndexKeySpecsConflict => "IndexKeySpecsConflict",
            Code::CannotIndexParallelArrays => "CannotIndexParallelArrays",
            Code::BadRegex => "Location51091",
            Code::ConflictingUpdateOperators => "ConflictingUpdateOperators",
            Code::UnrecognizedStage => "Location40324",
        }
    }
}

/// A command that failed: its code and a message for the client.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandError {
    pub code: Code,
    pub message: String,
}

impl CommandError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        CommandError { code, message: message.into() }
    }

    /// The reply document: `{ok: 0, errmsg, code, codeName}`.
    pub fn reply(&self) -> Document {
        doc! { "ok": 0.0, "errmsg": &self.message, "code": self.code.number(), "codeName": self.code.name() }
    }
}

pub type CommandResult = Result<Document, CommandError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_carries_code_and_name() {
        let r = CommandError::new(Code::Unauthorized, "no").reply();
        assert_eq!(r.get_f64("ok").unwrap(), 0.0);
        assert_eq!(r.get_i32("code").unwrap(), 13);
        assert_eq!(r.get_str("codeName").unwrap(), "Unauthorized");
    }
}
