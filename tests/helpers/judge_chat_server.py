"""A small OpenAI-compatible /v1/chat/completions server for tests: a real causal LM run with HF, over real HTTP.

It stands in for `vllm serve` (which takes minutes to start on this CPU): the message content is the model's input
as it is (no chat template), greedy generation up to `max_tokens`, and `top_logprobs` from the next-token
distribution. `app.state` lets a test make the next N requests fail with 503, turn logprobs off (a server that does
not offer them), and read the time each request arrived.
"""

from __future__ import annotations

import time

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from transformers import AutoModelForCausalLM, AutoTokenizer


def create_chat_app(model_dir: str, served_name: str = "judge") -> FastAPI:
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    app = FastAPI()
    app.state.fail_next = 0
    app.state.offer_logprobs = True
    app.state.arrivals = []

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        app.state.arrivals.append(time.monotonic())
        body = await request.json()
        if app.state.fail_next > 0:
            app.state.fail_next -= 1
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
        if body.get("model") != served_name:
            return JSONResponse({"error": {"message": f"model {body.get('model')!r} does not exist"}}, status_code=404)
        ids = tokenizer(body["messages"][-1]["content"], return_tensors="pt").input_ids
        with torch.inference_mode():
            if body.get("logprobs") and app.state.offer_logprobs:
                logprobs = torch.log_softmax(model(ids).logits[0, -1].double(), dim=-1)
                top = torch.topk(logprobs, min(int(body.get("top_logprobs", 1)), logprobs.numel()))
                entries = [{"token": tokenizer.decode([int(i)]), "logprob": float(v)}
                           for v, i in zip(top.values, top.indices)]
                content = entries[0]["token"]
                choice_logprobs = {"content": [{**entries[0], "top_logprobs": entries}]}
            else:
                out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                     max_new_tokens=int(body.get("max_tokens", 16)),
                                     pad_token_id=tokenizer.pad_token_id)
                content = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
                choice_logprobs = None
        return JSONResponse({"object": "chat.completion", "model": served_name, "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": choice_logprobs,
             "finish_reason": "length"}]})

    return app
