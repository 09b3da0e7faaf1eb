//! [`BackendError`]: a library's error, kept so that a chain of causes prints each text once.

use std::error::Error;
use std::fmt;

/// An error from a library a store is built on (sqlx, a Kafka client), as
/// [`store::Error::Backend`](crate::store::Error::Backend) and the projection layer's store
/// errors hold it.
///
/// Its message is the library's; its [`source`](Error::source) is the first cause in the
/// library's chain whose text the message does not already hold. Some libraries print their
/// cause inside their own message *and* return it as the source — sqlx's database errors do —
/// so a plain chain, printed the way `anyhow`'s `{:#}` prints it, would say SQLite's text
/// twice: "error returned from database: (code: 14) unable to open database file: (code: 14)
/// unable to open database file". Through a `BackendError` it says it once.
///
/// ```
/// use keel::BackendError;
///
/// #[derive(Debug)]
/// struct Inner;
/// impl std::fmt::Display for Inner {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("disk full")
///     }
/// }
/// impl std::error::Error for Inner {}
///
/// #[derive(Debug)]
/// struct Outer(Inner);
/// impl std::fmt::Display for Outer {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         write!(f, "write failed: {}", self.0) // prints its cause…
///     }
/// }
/// impl std::error::Error for Outer {
///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
///         Some(&self.0) // …and returns it as the source too
///     }
/// }
///
/// let error = BackendError::new(Outer(Inner));
/// assert_eq!(error.to_string(), "write failed: disk full");
/// assert!(std::error::Error::source(&error).is_none(), "disk full is said once");
/// assert!(error.get_ref().downcast_ref::<Outer>().is_some());
/// ```
#[derive(Debug)]
pub struct BackendError {
    inner: Box<dyn Error + Send + Sync>,
}

impl BackendError {
    /// Wraps a library's error.
    pub fn new(error: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self {
            inner: error.into(),
        }
    }

    /// The library's error, to downcast: `get_ref().downcast_ref::<sqlx::Error>()`.
    pub fn get_ref(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.inner
    }

    /// The library's error.
    pub fn into_inner(self) -> Box<dyn Error + Send + Sync> {
        self.inner
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl Error for BackendError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        let said = self.inner.to_string();
        let mut cause = self.inner.source();
        while let Some(error) = cause {
            if !said.contains(&error.to_string()) {
                return Some(error);
            }
            cause = error.source();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Link(&'static str, Option<Box<Link>>);

    impl fmt::Display for Link {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Link {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|l| l as &(dyn Error + 'static))
        }
    }

    fn chain(error: &dyn Error) -> Vec<String> {
        let mut out = vec![error.to_string()];
        let mut cause = error.source();
        while let Some(e) = cause {
            out.push(e.to_string());
            cause = e.source();
        }
        out
    }

    #[test]
    fn causes_already_said_are_skipped_and_new_ones_kept() {
        let error = BackendError::new(Link(
            "database failed: locked",
            Some(Box::new(Link(
                "locked",
                Some(Box::new(Link("by process 7", None))),
            ))),
        ));
        assert_eq!(chain(&error), ["database failed: locked", "by process 7"]);
        let plain = BackendError::new(Link("top", Some(Box::new(Link("cause", None)))));
        assert_eq!(chain(&plain), ["top", "cause"]);
    }
}
