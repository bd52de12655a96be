//! Category prototypes: each category's example queries, embedded by the gateway, averaged
//! into one unit vector; a query no header or rule classifies goes to the nearest prototype
//! when it is near enough and clearly nearer than the next.

use crate::config::Config;

/// One category's centroid.
#[derive(Debug, Clone)]
struct Prototype {
    category: String,
    /// Unit length.
    centroid: Vec<f32>,
}

/// Every category's prototype, in the config's category order.
#[derive(Debug, Clone, Default)]
pub struct Prototypes {
    prototypes: Vec<Prototype>,
    dimension: usize,
}

/// How a query matched its nearest prototype.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrototypeMatch {
    /// Cosine similarity of the query to the chosen category's prototype.
    pub similarity: f32,
    /// How much nearer the chosen prototype is than the second nearest (the similarity
    /// itself when there is only one prototype).
    pub margin: f32,
}

impl Prototypes {
    /// Builds the prototypes from the example vectors the gateway computed, per category
    /// name. Each vector is normalised, then the normalised mean is the centroid, so that
    /// every example weighs the same. Vectors of categories the config does not have, zero
    /// vectors and vectors whose dimension differs from the first vector's are left out;
    /// a category left without vectors has no prototype.
    pub fn new(config: &Config, vectors: Vec<(String, Vec<Vec<f32>>)>) -> Prototypes {
        let dimension = vectors
            .iter()
            .flat_map(|(_, examples)| examples.first())
            .map(Vec::len)
            .next()
            .unwrap_or(0);
        let mut prototypes = Vec::new();
        // Config order makes ties go to the category written first, as rules do.
        for category in &config.categories {
            let mut sum = vec![0.0f32; dimension];
            let mut count = 0usize;
            let examples = vectors
                .iter()
                .filter(|(name, _)| *name == category.name)
                .flat_map(|(_, examples)| examples);
            for example in examples {
                if example.len() != dimension {
                    continue;
                }
                let Some(unit) = normalised(example) else {
                    continue;
                };
                for (s, x) in sum.iter_mut().zip(unit) {
                    *s += x;
                }
                count += 1;
            }
            // Examples pointing in opposite directions can cancel out: no direction, no
            // prototype.
            if count == 0 {
                continue;
            }
            if let Some(centroid) = normalised(&sum) {
                prototypes.push(Prototype {
                    category: category.name.clone(),
                    centroid,
                });
            }
        }
        Prototypes {
            prototypes,
            dimension,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.prototypes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.prototypes.len()
    }

    /// Length of the vectors the prototypes were built from (0 when empty).
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// The unit centroid of a category, if it has one.
    pub fn centroid(&self, category: &str) -> Option<&[f32]> {
        self.prototypes
            .iter()
            .find(|p| p.category == category)
            .map(|p| p.centroid.as_slice())
    }

    /// The nearest prototype's category, if its similarity reaches `min_similarity` and it
    /// beats the second nearest by at least `margin`. Only categories `config` still has
    /// take part, so that prototypes built for an earlier config cannot pick a category
    /// that is gone. A query of another dimension, or of zero length, matches nothing.
    pub(crate) fn nearest<'p>(
        &'p self,
        config: &Config,
        query: &[f32],
    ) -> Option<(&'p str, PrototypeMatch)> {
        if query.len() != self.dimension {
            return None;
        }
        let query = normalised(query)?;
        let mut best: Option<(&Prototype, f32)> = None;
        let mut second = f32::NEG_INFINITY;
        for prototype in &self.prototypes {
            if config.category(&prototype.category).is_none() {
                continue;
            }
            let similarity = dot(&query, &prototype.centroid);
            match best {
                Some((_, top)) if similarity <= top => second = second.max(similarity),
                _ => {
                    if let Some((_, top)) = best {
                        second = top;
                    }
                    best = Some((prototype, similarity));
                }
            }
        }
        let (prototype, similarity) = best?;
        let margin = if second.is_finite() {
            similarity - second
        } else {
            similarity
        };
        let settings = &config.classifier;
        (similarity >= settings.min_similarity && margin >= settings.margin).then_some((
            prototype.category.as_str(),
            PrototypeMatch { similarity, margin },
        ))
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The vector scaled to unit length; `None` for a zero (or non-finite) vector.
fn normalised(v: &[f32]) -> Option<Vec<f32>> {
    let norm = dot(v, v).sqrt();
    (norm > 0.0 && norm.is_finite()).then(|| v.iter().map(|x| x / norm).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(min_similarity: f32, margin: f32) -> Config {
        Config::from_toml(&format!(
            "[classifier]\nmin_similarity = {min_similarity}\nmargin = {margin}\n\
             [categories.a]\n[categories.b]\n[categories.c]\n[categories.general]\n"
        ))
        .expect("valid config")
    }

    #[test]
    fn centroid_is_the_normalised_mean_of_normalised_examples() {
        let config = config(0.3, 0.05);
        let prototypes = Prototypes::new(
            &config,
            vec![
                // Lengths differ; normalising first gives both examples the same weight.
                ("a".to_owned(), vec![vec![10.0, 0.0], vec![0.0, 0.5]]),
                ("b".to_owned(), vec![vec![0.0, -3.0]]),
            ],
        );
        let a = prototypes.centroid("a").expect("a has a prototype");
        let h = std::f32::consts::FRAC_1_SQRT_2;
        assert!((a[0] - h).abs() < 1e-6 && (a[1] - h).abs() < 1e-6, "{a:?}");
        assert_eq!(prototypes.centroid("b"), Some(&[0.0, -1.0][..]));
        assert_eq!(prototypes.len(), 2);
        assert_eq!(prototypes.dimension(), 2);
    }

    #[test]
    fn unusable_vectors_are_left_out() {
        let config = config(0.3, 0.05);
        let prototypes = Prototypes::new(
            &config,
            vec![
                ("a".to_owned(), vec![vec![1.0, 0.0], vec![1.0, 0.0, 0.0]]),
                ("b".to_owned(), vec![vec![0.0, 0.0]]),
                ("c".to_owned(), vec![vec![1.0, 1.0], vec![-1.0, -1.0]]),
                ("missing".to_owned(), vec![vec![0.0, 1.0]]),
            ],
        );
        assert_eq!(prototypes.centroid("a"), Some(&[1.0, 0.0][..]));
        assert!(prototypes.centroid("b").is_none());
        assert!(prototypes.centroid("c").is_none());
        assert!(prototypes.centroid("missing").is_none());
        assert!(Prototypes::new(&config, Vec::new()).is_empty());
    }

    fn check(min_similarity: f32, margin: f32, query: &[f32], expected: Option<&str>) {
        let config = config(min_similarity, margin);
        let prototypes = Prototypes::new(
            &config,
            vec![
                ("a".to_owned(), vec![vec![1.0, 0.0, 0.0]]),
                ("b".to_owned(), vec![vec![0.0, 1.0, 0.0]]),
            ],
        );
        let got = prototypes.nearest(&config, query).map(|(name, _)| name);
        assert_eq!(got, expected, "query {query:?}");
    }

    #[test]
    fn nearest_needs_similarity_and_margin() {
        check(0.3, 0.05, &[1.0, 0.2, 0.0], Some("a"));
        check(0.3, 0.05, &[0.2, 1.0, 0.0], Some("b"));
        // Too far from both.
        check(0.3, 0.05, &[0.2, 0.1, 1.0], None);
        // Near both: not clearly nearer to either.
        check(0.3, 0.05, &[1.0, 0.98, 0.0], None);
        check(0.3, 0.0, &[1.0, 0.98, 0.0], Some("a"));
        // Other dimensions or a zero query match nothing.
        check(0.0, 0.0, &[1.0, 0.0], None);
        check(0.0, 0.0, &[0.0, 0.0, 0.0], None);
    }

    #[test]
    fn the_match_carries_similarity_and_margin() {
        let config = config(0.3, 0.05);
        let prototypes = Prototypes::new(
            &config,
            vec![
                ("a".to_owned(), vec![vec![1.0, 0.0]]),
                ("b".to_owned(), vec![vec![0.0, 1.0]]),
            ],
        );
        let (name, found) = prototypes.nearest(&config, &[0.8, 0.6]).expect("a match");
        assert_eq!(name, "a");
        assert!((found.similarity - 0.8).abs() < 1e-6);
        assert!((found.margin - 0.2).abs() < 1e-6);
    }

    fn unit_vectors() -> impl Strategy<Value = Vec<Vec<f32>>> {
        proptest::collection::vec(proptest::collection::vec(-1.0f32..1.0, 8), 1..4)
            .prop_filter_map("zero vector", |vs| {
                vs.iter().map(|v| normalised(v)).collect::<Option<Vec<_>>>()
            })
    }

    proptest! {
        /// With margin 0, a query equal to a category's centroid classifies to it, as long as
        /// no other centroid is (nearly) the same direction.
        #[test]
        fn a_centroid_classifies_to_its_category(
            a in unit_vectors(),
            b in unit_vectors(),
            c in unit_vectors(),
            min_similarity in 0.0f32..0.99,
            pick in 0usize..3,
        ) {
            let config = config(min_similarity, 0.0);
            let prototypes = Prototypes::new(
                &config,
                vec![("a".to_owned(), a), ("b".to_owned(), b), ("c".to_owned(), c)],
            );
            prop_assume!(prototypes.len() == 3);
            let names = ["a", "b", "c"];
            let centroids: Vec<&[f32]> =
                names.iter().filter_map(|n| prototypes.centroid(n)).collect();
            for i in 0..3 {
                for j in (i + 1)..3 {
                    prop_assume!(dot(centroids[i], centroids[j]) < 0.999);
                }
            }
            let query = centroids[pick].to_vec();
            let got = prototypes.nearest(&config, &query).map(|(name, _)| name);
            prop_assert_eq!(got, Some(names[pick]));
        }
    }
}
