// aiforge's checks for the npm clients: the official `openai` package and the Vercel AI SDK
// (`ai` with `@ai-sdk/openai-compatible` for chat completions and `@ai-sdk/openai` for the
// Responses API). Same protocol as the Python scripts: the target comes from AIFORGE_* in the
// environment, the checks to run from AIFORGE_CHECKS, and the last stdout line is the report
// {check: null | "error"}. Random weights: checks assert shapes and parsing, never content.
import OpenAI from "openai";
import { createOpenAI } from "@ai-sdk/openai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { embedMany, generateObject, generateText, streamText, tool } from "ai";
import { z } from "zod";

const env = process.env;
const target = {
  baseURL: env.AIFORGE_BASE_URL,
  apiKey: env.AIFORGE_API_KEY,
  chat: env.AIFORGE_CHAT_MODEL,
  embedding: env.AIFORGE_EMBEDDING_MODEL,
};
const MAX_TOKENS = 12;
const STRUCTURED_MAX_TOKENS = 128;
const CITIES = ["Paris", "Tokyo"];
// Thinking off: on chat completions as a body field, on the Responses API as reasoning effort.
const NO_THINKING = { chat_template_kwargs: { enable_thinking: false } };
const forecast = z.object({ unit: z.enum(["celsius", "fahrenheit"]), raining: z.boolean() });
const weatherParameters = {
  type: "object",
  properties: { city: { type: "string", enum: CITIES } },
  required: ["city"],
  additionalProperties: false,
};

function assert(condition, message) {
  if (!condition) throw new Error(`assertion failed: ${message}`);
}

const client = new OpenAI({ baseURL: target.baseURL, apiKey: target.apiKey, maxRetries: 0 });
// The AI SDK provider for chat completions; `name` is also the providerOptions key whose
// fields go into the request body as they are.
const compatible = createOpenAICompatible({
  name: "aiforge",
  baseURL: target.baseURL,
  apiKey: target.apiKey,
  supportsStructuredOutputs: true,
});
const aiforgeBody = { aiforge: NO_THINKING };
// @ai-sdk/openai: `openai(model)` is a Responses model.
const openaiProvider = createOpenAI({ baseURL: target.baseURL, apiKey: target.apiKey });
const weatherTool = tool({
  description: "Current weather in a city",
  inputSchema: z.object({ city: z.enum(CITIES) }),
  execute: async ({ city }) => `18 degrees and dry in ${city}`,
});

const checks = {
  async openai_chat() {
    const reply = await client.chat.completions.create({
      model: target.chat, messages: [{ role: "user", content: "Hello there" }],
      max_tokens: MAX_TOKENS, ...NO_THINKING,
    });
    assert(typeof reply.choices[0].message.content === "string", "content is a string");
    assert(reply.usage.completion_tokens === MAX_TOKENS, "usage counts the tokens");
  },
  async openai_stream() {
    const stream = await client.chat.completions.create({
      model: target.chat, messages: [{ role: "user", content: "Hello there" }],
      max_tokens: MAX_TOKENS, stream: true, stream_options: { include_usage: true }, ...NO_THINKING,
    });
    let text = "";
    let usage = null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? "";
      usage = chunk.usage ?? usage;
    }
    assert(text.length > 0, "streamed text");
    assert(usage && usage.completion_tokens === MAX_TOKENS, "usage in the last chunk");
  },
  async openai_forced_tool() {
    const reply = await client.chat.completions.create({
      model: target.chat, messages: [{ role: "user", content: "Weather in Paris?" }],
      tools: [{ type: "function", function: { name: "get_weather", parameters: weatherParameters } }],
      tool_choice: { type: "function", function: { name: "get_weather" } },
      max_tokens: STRUCTURED_MAX_TOKENS, ...NO_THINKING,
    });
    const calls = reply.choices[0].message.tool_calls;
    assert(calls.length === 1 && calls[0].function.name === "get_weather", "one get_weather call");
    assert(CITIES.includes(JSON.parse(calls[0].function.arguments).city), "arguments parse");
  },
  async openai_structured() {
    const reply = await client.chat.completions.create({
      model: target.chat, messages: [{ role: "user", content: "Rain in Paris?" }],
      response_format: { type: "json_schema", json_schema: { name: "forecast", strict: true,
        schema: z.toJSONSchema(forecast) } },
      max_tokens: STRUCTURED_MAX_TOKENS, ...NO_THINKING,
    });
    forecast.parse(JSON.parse(reply.choices[0].message.content));
  },
  async openai_embeddings() {
    const result = await client.embeddings.create({
      model: target.embedding, input: ["first text", "second text"],
    });
    assert(result.data.length === 2, "two vectors");
    assert(result.data[0].embedding.length > 0, "a vector has values");
  },
  async openai_responses() {
    const response = await client.responses.create({
      model: target.chat, input: "Hello there", max_output_tokens: MAX_TOKENS,
      reasoning: { effort: "none" },
    });
    assert(typeof response.output_text === "string" && response.output_text, "output_text");
    const stream = await client.responses.create({
      model: target.chat, input: "Hello there", max_output_tokens: MAX_TOKENS,
      reasoning: { effort: "none" }, stream: true,
    });
    const types = [];
    for await (const event of stream) types.push(event.type);
    assert(types[0] === "response.created", `first event ${types[0]}`);
    assert(types.includes("response.output_text.delta"), "text deltas");
  },
  async ai_generate_text() {
    const result = await generateText({
      model: compatible(target.chat), prompt: "Hello there", maxOutputTokens: MAX_TOKENS,
      providerOptions: aiforgeBody,
    });
    assert(result.text.length > 0, "text");
    assert(result.usage.outputTokens === MAX_TOKENS, "usage");
  },
  async ai_stream_text() {
    const result = streamText({
      model: compatible(target.chat), prompt: "Hello there", maxOutputTokens: MAX_TOKENS,
      providerOptions: aiforgeBody,
    });
    const parts = [];
    for await (const part of result.textStream) parts.push(part);
    assert(parts.length > 1 && parts.join("").length > 0, "streamed parts");
  },
  async ai_forced_tool() {
    const result = await generateText({
      model: compatible(target.chat), prompt: "Weather in Paris?",
      tools: { get_weather: weatherTool }, toolChoice: { type: "tool", toolName: "get_weather" },
      maxOutputTokens: STRUCTURED_MAX_TOKENS, providerOptions: aiforgeBody,
    });
    assert(result.toolCalls.length === 1, `one tool call, got ${result.toolCalls.length}`);
    assert(CITIES.includes(result.toolCalls[0].input.city), "typed input");
    assert(result.toolResults[0].output.startsWith("18 degrees"), "the tool ran");
  },
  async ai_generate_object() {
    const result = await generateObject({
      model: compatible(target.chat), schema: forecast, prompt: "Rain in Paris?",
      maxOutputTokens: STRUCTURED_MAX_TOKENS, providerOptions: aiforgeBody,
    });
    forecast.parse(result.object);
  },
  async ai_embed_many() {
    const result = await embedMany({
      model: compatible.textEmbeddingModel(target.embedding), values: ["first text", "second text"],
    });
    assert(result.embeddings.length === 2 && result.embeddings[0].length > 0, "two vectors");
  },
  async ai_responses_model() {
    // forceReasoning: the SDK sends `reasoning` only for model ids it knows to be reasoning models.
    const options = { openai: { reasoningEffort: "none", forceReasoning: true } };
    const text = await generateText({
      model: openaiProvider(target.chat), prompt: "Hello there", maxOutputTokens: MAX_TOKENS,
      providerOptions: options,
    });
    assert(text.text.length > 0, "text");
    const object = await generateObject({
      model: openaiProvider(target.chat), schema: forecast, prompt: "Rain in Paris?",
      maxOutputTokens: STRUCTURED_MAX_TOKENS, providerOptions: options,
    });
    forecast.parse(object.object);
  },
};

const results = {};
for (const name of (env.AIFORGE_CHECKS ?? "").split(",").filter(Boolean)) {
  if (!(name in checks)) {
    results[name] = `no check named ${name}`;
    continue;
  }
  try {
    await checks[name]();
    results[name] = null;
  } catch (error) {
    results[name] = error?.stack ?? String(error);
  }
}
console.log(JSON.stringify(results));
