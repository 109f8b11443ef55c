//! `uniffi-bindgen`, built from the workspace so that its uniffi version is
//! the binding's exactly. `bindings/kotlin/scripts/test` runs
//! `uniffi-bindgen generate --library <libhive_kotlin.so> --language kotlin`.

fn main() {
    uniffi::uniffi_bindgen_main()
}
