//! `kensa-fw`, the daemon on the edge box, as a library so tests can drive its core.
