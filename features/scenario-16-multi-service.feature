@scenario-16
Feature: Scenario 16 - several services side by side
  An operator runs a code model and a chat model at once on one host. AIMA must give
  them different ports, keep them isolated, release a port when its service goes, and
  say what fits on the GPU.

  Background:
    Given a running AIMA daemon
    And a registered model "model-alpha"
    And a registered model "model-beta"

  Scenario: 1. Two services for different models get unique automatic ports
    When I create service "alpha" for model "model-alpha"
    And I create service "beta" for model "model-beta"
    Then services "alpha" and "beta" have different ports inside the daemon's port range

  Scenario: 2. Both services appear in the service list with the right status
    Given a service "alpha" for model "model-alpha"
    And a service "beta" for model "model-beta"
    When I start service "alpha" and wait
    And I start service "beta" and wait
    Then the service list shows "alpha" as "running"
    And the service list shows "beta" as "running"

  Scenario: 3. Stopping one service does not affect the other
    Given a running service "alpha" for model "model-alpha"
    And a running service "beta" for model "model-beta"
    When I stop service "alpha"
    Then service "beta" is "running"
    And service "beta" answers inference requests
    And only the container of service "beta" is left

  Scenario: 4. A deleted service's port is released and reused by a new service
    Given a running service "alpha" for model "model-alpha"
    When I stop service "alpha"
    Then the port of service "alpha" is free on the host
    When I delete service "alpha"
    And I create service "gamma" for model "model-beta"
    Then service "gamma" got the port service "alpha" had

  Scenario: 5. Service ids are well-formed and name their engine
    When I create service "alpha" for model "model-alpha"
    Then the id of service "alpha" has the form svc-vllm-<8 hex digits>

  Scenario: 6. Recommend suggests placements from the available resources
    Given simulated GPUs "H200:143771,L4:23034"
    When I ask for a recommendation for model "model-alpha"
    Then the recommendation places model "model-alpha" on GPU 0 with a memory utilization
    And the recommendation shows each GPU's free and claimed memory

  Scenario: 6b. Recommend refuses a model that cannot fit and places one that can, with the numbers
    Given simulated GPUs "H100:81559,L4:23034"
    And a registered model "huge" of "150GB" with a context of 8192 tokens
    And a registered model "small" of "8GB" with a context of 8192 tokens
    When I ask for a recommendation for model "huge"
    Then the recommendation refuses model "huge" with its estimate and each GPU's memory left
    When I ask for a recommendation for model "small"
    Then the recommendation places model "small" on GPU 0 with a memory utilization
    And the recommendation shows the estimate of model "small" with its parts

  Scenario: 7. Two engines share one GPU's memory, and a third that would not fit is refused
    Given simulated GPUs "H200:143771"
    And a running service "alpha" for model "model-alpha" using 0.4 of the GPU memory
    And a running service "beta" for model "model-beta" using 0.4 of the GPU memory
    Then services "alpha" and "beta" are placed on GPU 0 with 0.8 of its memory claimed
    When I create service "gamma" for model "model-beta" using 0.4 of the GPU memory
    And I start service "gamma" and wait
    Then the start fails
    And service "gamma" is "failed" with a reason mentioning "not enough GPU memory"
    And only the containers of services "alpha" and "beta" are left

  @gpu
  Scenario: 7a. The GPU host shows its NVIDIA GPU to AIMA
    Given a real NVIDIA GPU
    Then the GPU's name and memory are known
    And aima device detect lists the same GPU
