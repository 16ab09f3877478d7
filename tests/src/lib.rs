//! Workspace-level end-to-end tests (see `tests/`): the demo's whole story on the embedded
//! default, asserted. The library itself is empty; the tests drive `posthuman-demo` (which
//! plays its users through `posthuman-cli`) and `posthuman-operator`'s audit.
