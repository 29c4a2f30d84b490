/**
 * The part of highlight.js's API that side_by_side.ts uses. The package's own
 * types (types/index.d.ts) begin with `/// <reference lib="dom" />`, which
 * changes Deno's stream types for every file type-checked with them (the
 * tests' `pipeThrough(new TextDecoderStream())` stops checking), so the
 * imports take these instead.
 */

/** A language definition, such as highlight.js/lib/languages/python. */
export type LanguageFn = (hljs: unknown) => unknown;

export interface HighlightResult {
  /** The code as HTML: `<span class="hljs-...">` and escaped text. */
  value: string;
}

declare const hljs: {
  registerLanguage(name: string, language: LanguageFn): void;
  highlight(
    code: string,
    options: { language: string; ignoreIllegals?: boolean },
  ): HighlightResult;
};
export default hljs;
