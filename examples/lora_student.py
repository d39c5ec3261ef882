"""An open-weights student: a LoRA adapter trained here, loaded into a vLLM-style server, routed to.

    pip install 'distillkit[lora]'
    python examples/lora_student.py

In production, set four variables and run a vLLM server with runtime LoRA loading (README,
"Open-weights students"):

    DISTILLKIT_FINE_TUNING=lora
    DISTILLKIT_BASE_MODEL=Qwen/Qwen2.5-0.5B-Instruct      # the model vLLM serves
    DISTILLKIT_LORA_DIR=/srv/distillkit/lora              # adapters, readable by vLLM
    DISTILLKIT_DISTILLED_BASE_URL=http://localhost:8000/v1

Offline, the simulator plays both the teacher and vLLM, the base model is a tiny random one
built on the spot, and the simulator answers for the adapter by running it with transformers.
"""

import os
import tempfile
import warnings
from pathlib import Path

import distillkit
from distillkit.testing import Simulator
from distillkit.testing.tiny_model import build_tiny_chat_model
from distillkit.training import LoRAFineTuningProvider, LoRASettings

# transformers is imported later, by the functions that need it: quiet it for the example.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # quiet transformers for the example
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore", category=FutureWarning)  # peft calls a deprecated transformers API

ANSWERS = {
    "Where is my new card?": "Your card ships within 3 days.",
    "My card has not arrived yet.": "Your card ships within 3 days.",
    "When will my card be delivered?": "Your card ships within 3 days.",
    "Has my card been shipped?": "Your card ships within 3 days.",
    "I am still waiting for my card.": "Your card ships within 3 days.",
    "How do I top up my account?": "Top up in the app under Wallet.",
    "Can I add money with a bank transfer?": "Top up in the app under Wallet.",
    "How can I put money into my wallet?": "Top up in the app under Wallet.",
    "Where do I add funds?": "Top up in the app under Wallet.",
    "Is there a fee to top up?": "Top up in the app under Wallet.",
}


def adapter_answers(lora: LoRAFineTuningProvider, base: Path):  # type: ignore[no-untyped-def]
    """What vLLM does with a loaded adapter: generate with the base model plus the adapter."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)

    def answer(request: dict) -> str:  # type: ignore[type-arg]
        adapter = lora.job_dir(request["model"]) / "adapter"
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)
        prompt = tokenizer.apply_chat_template(request["messages"], add_generation_prompt=True, tokenize=False)
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        out = model.generate(ids, max_new_tokens=16, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        return str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))

    return answer


with Simulator(answer=lambda r: ANSWERS.get(r["messages"][-1]["content"], "Let me check.")) as api:
    folder = Path(tempfile.mkdtemp())
    base = build_tiny_chat_model(folder / "base", [*ANSWERS, *ANSWERS.values(), "Let me check."])
    lora = LoRAFineTuningProvider(
        folder / "lora",
        base_model=str(base),
        server=api.base_url,  # the simulator speaks vLLM's POST /v1/load_lora_adapter
        settings=LoRASettings(device="cpu", epochs=10, learning_rate=1e-2, batch_size=4, rank=8),
    )
    api.student_answer = adapter_answers(lora, base)
    # holdout=0 turns the promotion gate off: this tiny random model memorises its ten examples but
    # cannot answer held-out paraphrases. With a real base model, keep the default (0.1).
    config = distillkit.DistillConfig(
        path=str(folder / "store"), min_examples=10, distilled_base_url=api.base_url, holdout=0.0
    )
    distiller = distillkit.Distiller(config, fine_tuning_provider=lora)
    client = distillkit.wrap(api.client(), distiller)

    def ask(question: str) -> str:
        reply = client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": question}])
        return f"{question!r:42} -> {reply.model}: {reply.choices[0].message.content}"

    for question in ANSWERS:
        ask(question)  # the teacher answers; captured
    [job] = distiller.train_now(wait=True, timeout=300)
    print(f"LoRA job {job.status}: {job.examples} examples, adapter {job.model} loaded:", list(api.lora_adapters))
    print(ask("Has my card been shipped?"))  # routed: the adapter answers, in the teacher's words
    print(ask("What is the capital of France?"))  # nothing like it was trained: the teacher answers
    distiller.close()
