//! An excluded clause, settled into the set of documents it matches before it is used.
//!
//! tantivy 0.27 asks an excluded clause whether it holds a document below the one its scorer
//! stands on (`DocSet::seek_danger`), which the scorer of a phrase refuses with a debug
//! assertion (`NOT "INV-2021"`) and answers only by accident in a release build. A set of
//! documents answers any such question, and an exclusion needs no score.

use tantivy::query::{
    BitSetDocSet, ConstScorer, EnableScoring, Explanation, Query, Scorer, Weight,
};
use tantivy::{BitSet, DocId, DocSet, Score, SegmentReader, TERMINATED};

/// `query`, answered from the set of documents it matches in each segment.
#[derive(Debug)]
pub struct Settled(pub Box<dyn Query>);

impl Clone for Settled {
    fn clone(&self) -> Self {
        Settled(self.0.box_clone())
    }
}

impl Query for Settled {
    fn weight(&self, scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(SettledWeight(self.0.weight(scoring)?)))
    }
}

struct SettledWeight(Box<dyn Weight>);

impl Weight for SettledWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let mut inner = self.0.scorer(reader, boost)?;
        let mut docs = BitSet::with_max_value(reader.max_doc());
        let mut doc = inner.doc();
        while doc != TERMINATED {
            docs.insert(doc);
            doc = inner.advance();
        }
        Ok(Box::new(ConstScorer::new(BitSetDocSet::from(docs), boost)))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        self.0.explain(reader, doc)
    }
}
