//! One error type for the ML core, with variants a caller can branch on (an accuracy
//! gate that refused a package, a file that could not be read) and messages that name
//! the thing at fault. The command line prints them with their sources (`{err:#}`).

use std::path::{Path, PathBuf};

/// A boxed source error (tract reports its own errors as `anyhow::Error`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in the ML core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or folder could not be read or written.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done ("reading model", "writing", …).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An image that does not decode whole, or holds no pixels.
    #[error("image {}: {reason}", path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// What is wrong with it (in the message, not repeated as a cause).
        reason: kensa_shared::decode::DecodeError,
    },
    /// A dataset whose layout or content cannot be used (no images, no `train/good`).
    #[error("{0}")]
    Dataset(String),
    /// A `.kmodel` file that is not one, is damaged, or has another format version.
    #[error("{0}")]
    ModelFile(String),
    /// Options or inputs that do not fit together (a ratio outside its range, too few
    /// images, a feature output the backbone does not have).
    #[error("{0}")]
    Invalid(String),
    /// Loading, typing or running a graph in tract failed.
    #[error("{context}")]
    Inference {
        /// What was being done.
        context: String,
        /// tract's error.
        #[source]
        source: BoxError,
    },
    /// ONNX bytes that do not decode.
    #[error("{context}")]
    Onnx {
        /// Which graph.
        context: &'static str,
        /// The protobuf decoder's message.
        #[source]
        source: prost::DecodeError,
    },
    /// PyTorch weights that cannot be read or do not fit the network.
    #[error("{0}")]
    Weights(String),
    /// A quantised package ranks the test images worse than fp32 by more than allowed.
    #[error(
        "the {precision} package loses {:.2} points of image AUROC on {dataset} (fp32 {fp32:.4} → \
         {quantised:.4}; limit {limit:.2}): not written. Use fp32, raise --max-auroc-drop, or \
         --accept-accuracy-drop",
        100.0 * (fp32 - quantised)
    )]
    AccuracyDrop {
        /// Number format of the refused package.
        precision: String,
        /// The test set.
        dataset: String,
        /// Image AUROC of the fp32 package.
        fp32: f64,
        /// Image AUROC of the quantised package.
        quantised: f64,
        /// Largest loss allowed (AUROC points).
        limit: f64,
    },
    /// A quantised package's accuracy cannot be checked (no test images with defects).
    #[error("{0}")]
    AccuracyUnchecked(String),
    /// A signing key file that is not a Kensa key, or a key that would be overwritten.
    #[error("{0}")]
    Key(String),
    /// A tile layout that cannot cover an image.
    #[error(transparent)]
    Tiling(#[from] kensa_shared::tiling::TilingError),
    /// The package contract refused something (see `kensa_shared::package`).
    #[error(transparent)]
    Package(#[from] kensa_shared::package::PackageError),
    /// Running a package graph failed (see `kensa_shared::runtime`).
    #[error(transparent)]
    Runtime(#[from] kensa_shared::runtime::RuntimeError),
    /// Serialising a model failed.
    #[error("encoding the model: {0}")]
    Encode(#[from] postcard::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O failure on `path` while `action` ("reading model", "writing").
    pub fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self + use<> {
        let path = path.to_path_buf();
        move |source| Self::Io { action, path, source }
    }

    /// A tract failure while doing `context`.
    pub fn inference(context: impl Into<String>) -> impl FnOnce(anyhow::Error) -> Self {
        let context = context.into();
        move |e| Self::Inference { context, source: e.into() }
    }
}

/// `ensure!` for [`Error::Invalid`] and friends: return `$err` unless `$cond`.
macro_rules! ensure {
    ($cond:expr, $variant:ident, $($fmt:tt)*) => {
        if !$cond {
            return Err($crate::error::Error::$variant(format!($($fmt)*)));
        }
    };
}
pub(crate) use ensure;

/// Return `Error::$variant(format!(…))`.
macro_rules! fail {
    ($variant:ident, $($fmt:tt)*) => {
        return Err($crate::error::Error::$variant(format!($($fmt)*)))
    };
}
pub(crate) use fail;
