//! The vellum server: one engine thread (scheduler, block manager, KV cache, model) behind an
//! OpenAI-compatible HTTP API. Not assembled yet (issue 8): this binary only says so.

fn main() {
    eprintln!(
        "vellum: the server is not assembled yet (issue 8); the crates it will use are \
         kv-block, scheduler, attention-kernels, models and sampling. See README.md."
    );
    std::process::exit(2);
}
