// Tiny i18n: Japanese first, English on request. Nothing is stored on the device
// (no cookie, no localStorage): the choice lives only as long as the page.

/**
 * @param {Record<string, Record<string, string>>} dicts  {ja: {...}, en: {...}}
 * @returns {{t: (key: string, vars?: Record<string, string|number>) => string,
 *            apply: (root?: ParentNode) => void, lang: () => string,
 *            setLang: (lang: string) => void, onChange: (fn: () => void) => void}}
 */
export function createI18n(dicts, initial = "ja") {
  let current = dicts[initial] ? initial : "ja";
  const listeners = [];

  function t(key, vars = {}) {
    const text = (dicts[current] && dicts[current][key]) ?? dicts.ja[key] ?? key;
    return text.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
  }

  function apply(root = document) {
    for (const el of root.querySelectorAll("[data-i18n]")) {
      el.textContent = t(el.dataset.i18n);
    }
    for (const el of root.querySelectorAll("[data-i18n-placeholder]")) {
      el.setAttribute("placeholder", t(el.dataset.i18nPlaceholder));
    }
    for (const el of root.querySelectorAll("[data-i18n-aria-label]")) {
      el.setAttribute("aria-label", t(el.dataset.i18nAriaLabel));
    }
    document.documentElement.lang = current;
  }

  function setLang(lang) {
    if (!dicts[lang] || lang === current) return;
    current = lang;
    apply();
    for (const fn of listeners) fn();
  }

  return { t, apply, lang: () => current, setLang, onChange: (fn) => listeners.push(fn) };
}

/** Wire a button that toggles between Japanese and English; its label names the other language. */
export function bindLangSwitch(button, i18n) {
  const label = () => {
    button.textContent = i18n.lang() === "ja" ? "English" : "日本語";
    button.setAttribute("lang", i18n.lang() === "ja" ? "en" : "ja");
  };
  button.addEventListener("click", () => i18n.setLang(i18n.lang() === "ja" ? "en" : "ja"));
  i18n.onChange(label);
  label();
}
