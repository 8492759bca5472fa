@mcp
Feature: An AI agent operates AIMA through MCP
  AIMA is AI Inference Managed by AI: an agent on the host launches `aima mcp`, as desktop
  and coding agents launch MCP servers, and runs the host with AIMA's tools alone. When a
  start fails, the tool's answer says why and what to do; the agent acts on it and checks
  that the model answers.

  Background:
    Given a running AIMA daemon
    And an agent connected to "aima mcp"

  Scenario: 1. An agent deploys a model and recovers from a port conflict using only MCP tools
    When the agent calls "create_model" with {"name": "agent-model", "source": "ollama", "repo": "tinyllama"}
    And the agent calls "create_service" with {"model_id": "agent-model", "engine_type": "vllm", "name": "agent-svc", "restart": "no"}
    Given an external process holds the port of service "agent-svc"
    When the agent calls "start_service" with {"id": "agent-svc"} and follows its progress
    Then the tool answered with an error mentioning "delete this service and create it with another --port"
    And the tool's error names the port of service "agent-svc" and the blocking process
    And the agent was told of the phases "validate, port_check, failed" as progress
    When the agent calls "get_service" with {"id": "agent-svc"}
    Then the tool answered that service "agent-svc" is "failed"
    When the agent calls "delete_service" with {"id": "agent-svc"}
    And the agent calls "create_service" with {"model_id": "agent-model", "engine_type": "vllm", "name": "agent-svc"}
    And the agent calls "start_service" with {"id": "agent-svc"} and follows its progress
    Then the tool answered that service "agent-svc" is "running"
    And the agent was told of the phases "validate, port_check, image, create, start, health, running" as progress
    When the agent calls "chat" with {"model": "agent-model", "message": "hello"}
    Then the tool answered with the reply "Hello from the aima stub engine serving agent-model."
    When the agent calls "stop_service" with {"id": "agent-svc"}
    Then the tool answered with an error mentioning "force: true"
    When the agent calls "stop_service" with {"id": "agent-svc", "force": true}
    Then the tool answered that service "agent-svc" is "stopped"
    And no container of this run is left

  Scenario: 2. An agent's mistakes come back as tool errors it can read, never protocol errors
    When the agent calls "start_service" with {"id": 42}
    Then the tool answered with an error mentioning "invalid arguments"
    When the agent calls "create_service" with {"model_id": "no-such-model", "engine_type": "vllm"}
    Then the tool answered with an error mentioning "no model with id, name or id prefix 'no-such-model'"
    When the agent calls "create_model" with {"name": "m", "source": "nowhere", "repo": "x"}
    Then the tool answered with an error mentioning "nowhere"
