@real-engines @real-engine
Feature: Real engines - llama.cpp's own server run by AIMA on the CPU with a tiny real model
  The stub engine was written from the engines' documentation; these criteria run the
  real thing. llama.cpp's llama-server is built for the CPU from the sources PyPI's
  llama-cpp-python vendors (`harness image build --engine llama.cpp`, image
  aima-llamacpp-cpu), and the model is a tiny GGUF with random weights, a real tokenizer
  and a chat template (`harness model build`). One thread, as on a shared 2-core machine.
  Without the image these criteria are skipped, saying how to build it; CI builds it.

  Background:
    Given a running AIMA daemon
    And the daemon is restarted with AIMA_ENGINE_IMAGE_LLAMACPP=aima-llamacpp-cpu:latest
    And the tiny real models are under the model root

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
