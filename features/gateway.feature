@gateway
Feature: Model gateway - one OpenAI endpoint that routes by model and starts engines on demand
  An application points its OpenAI client at AIMA and names a model. AIMA finds the
  model's service, starts it when it is cold (once, however many requests wait), streams
  the engine's answer back as it is written, and cleans up after an engine that dies.

  Background:
    Given a running AIMA daemon
    And a registered model "gw-model"

  Scenario: 1. A request names a model and reaches its service
    Given a running service "gw" for model "gw-model"
    When I send a chat request for "gw-model" to the gateway
    Then the gateway answers 200 from service "gw"

  Scenario: 2. A cold service is started by the first request, which is held and answered
    Given a service "gw" for model "gw-model" with env "STUB_START_DELAY_MS=1500"
    When I send a chat request for "gw-model" to the gateway
    Then the gateway answers 200 from service "gw"
    And service "gw" is "running"
    And service "gw" was started once

  Scenario: 3. Twenty concurrent requests for a cold service start it once
    Given a service "gw" for model "gw-model" with env "STUB_START_DELAY_MS=1000"
    When I send 20 chat requests for "gw-model" to the gateway at once
    Then every answer is 200 from service "gw"
    And service "gw" was started once

  Scenario: 4. A streaming request that waits for a cold engine hears that it is loading
    Given a service "gw" for model "gw-model" with env "STUB_START_DELAY_MS=4000"
    When I send a streaming chat request for "gw-model" to the gateway
    Then the stream carried loading comments and ended with [DONE]

  Scenario: 5. A client that hangs up cancels the engine's request
    Given a running service "gw" for model "gw-model" with env "STUB_TOKEN_DELAY_MS=20"
    When I start a long streaming request for "gw-model" and hang up after the first chunk
    Then the engine of service "gw" saw the client disconnect early

  Scenario: 6. An engine killed mid-stream ends the stream with an error event
    Given a running service "gw" for model "gw-model" with env "STUB_TOKEN_DELAY_MS=20" and restart policy "no"
    When I start a long streaming request for "gw-model" and the engine of service "gw" is killed
    Then the stream ended with an error event
    And within 10000 ms service "gw" is "failed" with a reason mentioning "exited"
    And no container of this run is left

  Scenario: 7. An idle service is unloaded after its idle timeout, never during a long stream
    Given a service "gw" for model "gw-model" with idle timeout "1s" and env "STUB_TOKEN_DELAY_MS=20"
    When I stream 150 tokens from "gw-model" while watching service "gw"
    Then service "gw" was "running" throughout the stream
    And within 4000 ms service "gw" is "stopped" with a reason mentioning "idle timeout 1s"
    And the port of service "gw" is free on the host
    And no container of this run is left

  Scenario: 8. When GPU memory is short the least recently used idle service is evicted, never a pinned one
    Given the daemon is restarted with AIMA_SIMULATE_GPU_RELEASE=1s
    And simulated GPUs "H100:81920"
    And a registered model "model-p"
    And a registered model "model-a"
    And a registered model "model-b"
    And a pinned service "p" for model "model-p" using 0.45 of the GPU memory
    And a service "a" for model "model-a" using 0.45 of the GPU memory
    And a service "b" for model "model-b" using 0.45 of the GPU memory
    When I send a chat request for "model-p" to the gateway
    And I send a chat request for "model-a" to the gateway
    And I send a chat request for "model-b" to the gateway
    Then the gateway answers 200 from service "b" after waiting at least 1000 ms
    And service "a" is "stopped" with a reason mentioning "evicted by the gateway"
    And service "p" is "running"
    When I send a chat request for "model-a" to the gateway
    Then the gateway answers 200 from service "a"
    And service "b" is "stopped" with a reason mentioning "evicted by the gateway"
    And service "p" is "running"
    And only the containers of services "p" and "a" are left

  Scenario: 9. A busy engine queues requests; a full queue answers 503 with Retry-After
    Given the daemon is restarted with AIMA_GATEWAY_QUEUE=2
    And a running service "gw" for model "gw-model" taking 1 request at a time, with env "STUB_TOKEN_DELAY_MS=20"
    When a long stream for "gw-model" holds the engine and 2 more requests wait
    Then the extra request was refused with 503 and Retry-After, and the queued ones were answered

  @swap-storm
  Scenario: 10. A swap storm: 200 cold requests for two models that cannot share the GPU are all answered within one swap
    Given the daemon is restarted with AIMA_SIMULATE_GPU_RELEASE=1s
    And simulated GPUs "H100:81920"
    And a registered model "left"
    And a registered model "right"
    And a service "l" for model "left" using 0.6 of the GPU memory
    And a service "r" for model "right" using 0.6 of the GPU memory
    When I send 200 chat requests at once, alternating between "left" and "right"
    Then every answer is 200, none after more than 20000 ms
    And one of services "l" and "r" is "running" and the other was evicted once, for it
