// The type a JSON document must have to match T: a string enum member becomes its literal
// value ("absolute" for ThresholdsMode.Absolute), since JSON cannot spell an enum member.
// Numeric enums already accept their number literals; everything else is checked as is.
type Primitive = string | number | boolean | bigint | symbol | null | undefined;

export type Literal<T> = unknown extends T
  ? T
  : T extends string
    ? `${T}`
    : T extends Primitive
      ? T
      : T extends ReadonlyArray<infer U>
        ? Array<Literal<U>>
        : { [K in keyof T]: Literal<T[K]> };
