"""Plays a coding agent: calls the gateway with an official SDK (openai or anthropic) the way an
agent would, and prints, as JSON, what each call returned and the text its user would see.

Any exception (a reply the SDK cannot parse, a transport error) ends the script with a traceback
and a non-zero exit: the Rust integration tests treat that as a failure.

    python agent.py openai    --base-url http://127.0.0.1:PORT/v1 --api-key TOKEN
    python agent.py anthropic --base-url http://127.0.0.1:PORT/anthropic --api-key TOKEN
"""

import argparse
import json
import sys

MESSAGES = [{"role": "user", "content": "Refactor utils.py"}]


def run_openai(base_url, api_key):
    import openai

    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=10)
    out = {}
    reply = client.chat.completions.create(model="gpt-agent", messages=MESSAGES)
    out["chat"] = {"text": reply.choices[0].message.content, "model": reply.model}

    stream = client.chat.completions.create(
        model="gpt-agent", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    text, usage = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage is not None:
            usage = chunk.usage.total_tokens
    out["chat_stream"] = {"text": text, "usage": usage}

    reply = client.completions.create(model="gpt-agent-instruct", prompt="def f():")
    out["completions"] = {"text": reply.choices[0].text, "model": reply.model}
    stream = client.completions.create(model="gpt-agent-instruct", prompt="def f():", stream=True)
    out["completions_stream"] = {"text": "".join(c.choices[0].text for c in stream if c.choices)}

    reply = client.responses.create(model="gpt-agent", input="Refactor utils.py")
    out["responses"] = {"text": reply.output_text, "model": reply.model}
    text = ""
    for event in client.responses.create(model="gpt-agent", input="Refactor utils.py", stream=True):
        if event.type == "response.output_text.delta":
            text += event.delta
    out["responses_stream"] = {"text": text}
    return out


def run_anthropic(base_url, api_key):
    import anthropic

    client = anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0, timeout=10)
    out = {}
    message = client.messages.create(model="claude-agent", max_tokens=256, messages=MESSAGES)
    out["messages"] = {
        "text": "".join(block.text for block in message.content if block.type == "text"),
        "model": message.model,
        "stop_reason": message.stop_reason,
    }
    with client.messages.stream(model="claude-agent", max_tokens=256, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    out["messages_stream"] = {"text": text, "model": final.model, "stop_reason": final.stop_reason}
    events = client.messages.create(
        model="claude-agent", max_tokens=256, messages=MESSAGES, stream=True
    )
    out["messages_stream_events"] = {"events": [event.type for event in events]}
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("sdk", choices=["openai", "anthropic"])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    args = parser.parse_args()
    run = run_openai if args.sdk == "openai" else run_anthropic
    json.dump(run(args.base_url, args.api_key), sys.stdout)
    print()


if __name__ == "__main__":
    main()
