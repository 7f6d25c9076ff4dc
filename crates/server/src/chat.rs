//! Chat prompts: a model's Jinja chat template (from `tokenizer_config.json`) rendered with
//! minijinja and Python-compatible string methods, as Hugging Face's `apply_chat_template` does.

use minijinja::{Environment, ErrorKind, context};
use serde::Serialize;

use crate::api_error::ApiError;

/// Name under which the template is stored in its environment.
const TEMPLATE_NAME: &str = "chat";

/// One message as templates see it: `{"role": ..., "content": ...}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TemplateMessage {
    /// `system`, `user`, `assistant`, ...
    pub role: String,
    /// The message text.
    pub content: String,
}

/// A compiled chat template with the special tokens it may reference.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// Compiles `source`; a syntax error is reported with minijinja's explanation.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, minijinja::Error> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_template_owned(TEMPLATE_NAME, source.to_string())?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        })
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends with the assistant's turn
    /// header. A template that rejects the conversation (`raise_exception`) is a 400.
    pub fn render(
        &self,
        messages: &[TemplateMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ApiError> {
        let template = self.env.get_template(TEMPLATE_NAME).map_err(internal)?;
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
            })
            .map_err(|error| match error.kind() {
                ErrorKind::InvalidOperation => ApiError::bad_request(format!(
                    "The chat template rejected the messages: {}",
                    error.detail().unwrap_or("no reason given")
                )),
                _ => ApiError::bad_request(format!(
                    "The chat template could not be applied: {error}"
                )),
            })
    }
}

fn raise_exception(message: String) -> Result<String, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

fn internal(error: minijinja::Error) -> ApiError {
    ApiError::Internal(format!("chat template: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Zephyr/TinyLlama's template, as shipped in its `tokenizer_config.json`.
    const ZEPHYR: &str = "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";

    fn message(role: &str, content: &str) -> TemplateMessage {
        TemplateMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    #[test]
    fn renders_a_real_template_like_transformers() {
        let template = ChatTemplate::new(ZEPHYR, "<s>", "</s>").unwrap();
        let text = template
            .render(
                &[message("system", "Be brief."), message("user", "Hi")],
                true,
            )
            .unwrap();
        assert_eq!(
            text,
            "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\n"
        );
        let text = template.render(&[message("user", "Hi")], false).unwrap();
        assert_eq!(text, "<|user|>\nHi</s>\n");
    }

    #[test]
    fn python_string_methods_and_raise_exception() {
        let source = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation must start with user') }}{% endif %}{{ bos_token }}{{ messages[0]['content'].strip().upper() }}";
        let template = ChatTemplate::new(source, "<s>", "</s>").unwrap();
        assert_eq!(
            template
                .render(&[message("user", "  hey ")], false)
                .unwrap(),
            "<s>HEY"
        );
        let error = template
            .render(&[message("assistant", "x")], false)
            .unwrap_err();
        assert_eq!(error.status().as_u16(), 400);
        assert!(
            error
                .body()
                .error
                .message
                .contains("Conversation must start with user")
        );
    }

    #[test]
    fn syntax_errors_are_reported_at_load() {
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
    }
}
