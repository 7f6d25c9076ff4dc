//! Hugging Face tensor names of each family, as a table rather than five loaders.

use crate::config::Family;
use crate::weight_source::WeightSource;

/// How a family stores its query/key/value projection.
#[derive(Debug, Clone, Copy)]
pub(crate) enum QkvNames {
    /// Three `nn.Linear` modules, fused into one matrix on load.
    Split {
        q: &'static str,
        k: &'static str,
        v: &'static str,
    },
    /// One fused module (GPT-2's `c_attn`).
    Fused(&'static str),
}

/// How a family stores the first MLP projection.
#[derive(Debug, Clone, Copy)]
pub(crate) enum UpNames {
    /// Gate and up projections of a gated MLP, fused into one matrix on load.
    Gated {
        gate: &'static str,
        up: &'static str,
    },
    /// A single projection.
    Plain(&'static str),
}

/// The storage layout of a family's linear weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinearLayout {
    /// `nn.Linear`: `[out, in]`.
    OutIn,
    /// GPT-2's `Conv1D`: `[in, out]`.
    InOut,
}

/// The module names of one family, relative to a prefix that varies between checkpoints.
///
/// Invariant: `prefixes` is non-empty; the first is what `save_pretrained` of the causal-LM class
/// writes, later ones are the base-model spellings found on the Hub.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FamilyNames {
    prefixes: &'static [&'static str],
    pub(crate) token_embedding: &'static str,
    pub(crate) position_embedding: Option<&'static str>,
    layers: &'static str,
    pub(crate) attn_norm: &'static str,
    pub(crate) qkv: QkvNames,
    pub(crate) attn_out: &'static str,
    pub(crate) mlp_norm: &'static str,
    pub(crate) mlp_up: UpNames,
    pub(crate) mlp_down: &'static str,
    pub(crate) final_norm: &'static str,
    pub(crate) layout: LinearLayout,
}

const LLAMA: FamilyNames = FamilyNames {
    prefixes: &["model."],
    token_embedding: "embed_tokens",
    position_embedding: None,
    layers: "layers",
    attn_norm: "input_layernorm",
    qkv: QkvNames::Split {
        q: "self_attn.q_proj",
        k: "self_attn.k_proj",
        v: "self_attn.v_proj",
    },
    attn_out: "self_attn.o_proj",
    mlp_norm: "post_attention_layernorm",
    mlp_up: UpNames::Gated {
        gate: "mlp.gate_proj",
        up: "mlp.up_proj",
    },
    mlp_down: "mlp.down_proj",
    final_norm: "norm",
    layout: LinearLayout::OutIn,
};

const OPT: FamilyNames = FamilyNames {
    prefixes: &["model.decoder.", "decoder."],
    token_embedding: "embed_tokens",
    position_embedding: Some("embed_positions"),
    layers: "layers",
    attn_norm: "self_attn_layer_norm",
    qkv: QkvNames::Split {
        q: "self_attn.q_proj",
        k: "self_attn.k_proj",
        v: "self_attn.v_proj",
    },
    attn_out: "self_attn.out_proj",
    mlp_norm: "final_layer_norm",
    mlp_up: UpNames::Plain("fc1"),
    mlp_down: "fc2",
    final_norm: "final_layer_norm",
    layout: LinearLayout::OutIn,
};

const GPT2: FamilyNames = FamilyNames {
    prefixes: &["transformer.", ""],
    token_embedding: "wte",
    position_embedding: Some("wpe"),
    layers: "h",
    attn_norm: "ln_1",
    qkv: QkvNames::Fused("attn.c_attn"),
    attn_out: "attn.c_proj",
    mlp_norm: "ln_2",
    mlp_up: UpNames::Plain("mlp.c_fc"),
    mlp_down: "mlp.c_proj",
    final_norm: "ln_f",
    layout: LinearLayout::InOut,
};

/// Name of the untied output projection (never prefixed).
pub(crate) const LM_HEAD: &str = "lm_head.weight";

impl FamilyNames {
    /// The table of `family`.
    pub(crate) fn of(family: Family) -> Self {
        match family {
            Family::Llama | Family::Mistral | Family::Qwen2 => LLAMA,
            Family::Opt => OPT,
            Family::Gpt2 => GPT2,
        }
    }

    /// The prefix this checkpoint uses: the first whose token embedding exists, else the
    /// canonical one (so that a missing-tensor error names the canonical spelling).
    pub(crate) fn prefix_in(&self, source: &dyn WeightSource) -> &'static str {
        self.prefixes
            .iter()
            .copied()
            .find(|p| source.contains(&format!("{p}{}.weight", self.token_embedding)))
            .unwrap_or(self.prefixes[0])
    }

    /// The prefix of layer `index`'s modules, including `prefix`.
    pub(crate) fn layer_prefix(&self, prefix: &str, index: usize) -> String {
        format!("{prefix}{}.{index}.", self.layers)
    }
}
