"""The distilled model served by an OpenAI-compatible server (vLLM, Ollama, llama.cpp, hosted).

    python examples/self_hosted_student.py

In production you set two variables and change nothing else:

    DISTILLKIT_DISTILLED_BASE_URL=http://localhost:8000/v1   # e.g. vLLM with --enable-lora
    DISTILLKIT_DISTILLED_API_KEY=...                          # if the server wants one

Here a second simulator plays the self-hosted server: it serves only the distilled model,
while the teacher stays on the first one. When the student server fails, the teacher answers.
"""

import tempfile

import distillkit
from distillkit.state import ActiveModel
from distillkit.testing import Simulator

STUDENT = "support-lora-v1"  # the name the self-hosted server knows the adapter by

with Simulator() as teacher_api, Simulator() as student_server, tempfile.TemporaryDirectory() as folder:
    student_server.add_model(STUDENT)
    config = distillkit.DistillConfig(path=folder, distilled_base_url=student_server.base_url)
    distiller = distillkit.Distiller(config)
    client = distillkit.wrap(teacher_api.client(), distiller)

    questions = ["Where is my new card?", "My card has not arrived yet", "When does my card come?"]
    for q in questions:
        client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": q}])

    # What a training round does on success (a LoRA provider would load the adapter first):
    distiller.flush()
    ids = [p.id for p in distiller.store.scroll(namespace="default", indexed=False)]
    distiller.store.set_payload(ids, {"indexed": True, "distilled_model": STUDENT, "job_id": "example"})
    distiller.registry.activate(ActiveModel("default", STUDENT, trained_count=len(ids)))

    response = client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": questions[0]}])
    print("answered by", response.model, "at", student_server.base_url)

    student_server.inject("chat", status=503)  # the student server is down...
    response = client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": questions[0]}])
    print("answered by", response.model, "-", distillkit.route_info(response).reason)  # ...the teacher answers
    distiller.close()
