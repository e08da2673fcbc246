//! The name of a cgroup target found by a pattern: `--target-name TEMPLATE`, else the best
//! name its workload has, else its path (as before workload names).
use super::{
    FIELDS, Workload,
    host::{HostFiles, Index},
    path,
};

/// How pattern targets are named: `--target-name` and `--host-root`.
#[derive(Clone, Debug)]
pub struct Naming {
    pub template: Option<Template>,
    pub files: HostFiles,
}

impl Naming {
    /// (name, workload) of the cgroup at `relative` (to the mount), with the names `index`
    /// has for its ids.
    pub fn describe(&self, relative: &str, index: &Index) -> (String, Workload) {
        let mut workload = path::parse(relative);
        index.resolve(&mut workload);
        (name(self.template.as_ref(), relative, &workload), workload)
    }
}

/// `--target-name`: text with `{field}` placeholders, a field of [`FIELDS`] or `cgroup` (the
/// path relative to the mount). `{{` and `}}` are literal braces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(&'static str),
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(format!("{{{name} is not closed (write {{{{ for a brace)")),
                        }
                    }
                    let field = FIELDS.iter().chain(&["cgroup"]).find(|f| **f == name).ok_or_else(|| {
                        format!("{{{name}}} is no field; use {{{}}} or {{cgroup}}", FIELDS.join("}, {"))
                    })?;
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Field(field));
                }
                '}' => return Err("a lone } (write }} for a brace)".into()),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        if !parts.iter().any(|p| matches!(p, Part::Field(_))) {
            return Err("no {field}: every target would have the same name".into());
        }
        Ok(Template { parts })
    }

    /// The name, if every field it uses is known.
    fn render(&self, cgroup: &str, w: &Workload) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field("cgroup") => out.push_str(cgroup),
                Part::Field(f) => out.push_str(w.field(f)?),
            }
        }
        Some(out)
    }
}

/// The target name of the cgroup `cgroup` (relative to the mount) holding `w`: the template's
/// when every field it uses is known; else `namespace/pod/container` for a Kubernetes
/// container, `namespace/pod` for a pod, a Docker container's name; else the path.
pub fn name(template: Option<&Template>, cgroup: &str, w: &Workload) -> String {
    if let Some(name) = template.and_then(|t| t.render(cgroup, w)) {
        return name;
    }
    match (&w.namespace, &w.pod, &w.container, &w.container_id) {
        (Some(namespace), Some(pod), Some(container), _) => format!("{namespace}/{pod}/{container}"),
        (Some(namespace), Some(pod), None, None) => format!("{namespace}/{pod}"),
        (None, None, Some(container), _) => container.clone(),
        _ => cgroup.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::{super::path::parse, *};

    #[test]
    fn templates_render_known_fields_and_fall_back_to_the_best_name() {
        let id = "ab".repeat(32);
        let path = format!("kubepods/besteffort/pod3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f/{id}");
        let mut w = parse(&path);
        let t = Template::parse("{namespace}.{pod}.{container}").unwrap();
        assert_eq!(name(Some(&t), &path, &w), path, "unresolved: the path");
        let by_id = Template::parse("{qos}/{container_id}").unwrap();
        assert_eq!(name(Some(&by_id), &path, &w), format!("besteffort/{id}"));
        w.namespace = Some("shop".into());
        w.pod = Some("cart-1".into());
        assert_eq!(
            name(None, &path, &w),
            path,
            "a container without its name is not its pod"
        );
        w.container = Some("app".into());
        assert_eq!(name(Some(&t), &path, &w), "shop.cart-1.app");
        assert_eq!(name(None, &path, &w), "shop/cart-1/app");
        let pod = Workload {
            container_id: None,
            container: None,
            ..w.clone()
        };
        assert_eq!(name(None, "p", &pod), "shop/cart-1");
        let docker = Workload {
            container: Some("redis".into()),
            ..Workload::default()
        };
        assert_eq!(name(None, "d", &docker), "redis");
        assert_eq!(
            name(None, "system.slice/nginx.service", &parse("system.slice/nginx.service")),
            "system.slice/nginx.service"
        );
        let unit = Template::parse("svc:{unit}{{x}}").unwrap();
        assert_eq!(
            name(Some(&unit), "system.slice/a.service", &parse("system.slice/a.service")),
            "svc:a.service{x}"
        );
    }

    #[test]
    fn a_bad_template_says_what_is_wrong() {
        for (text, says) in [
            ("{podname}", "{podname} is no field"),
            ("plain", "no {field}"),
            ("{pod}}", "a lone }"),
            ("{namespace}/{pod", "{pod is not closed"),
        ] {
            let err = Template::parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
