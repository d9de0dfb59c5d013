//! The Conker facade's one task: created through the same launch path as every other.

use super::*;

impl Engine {
    /// The most recent task created through the Conker API: its view, the request it came from,
    /// and whether a cancel was requested.
    pub fn conker_task(&self) -> Option<(Container, Value, bool)> {
        let tasks = lock(&self.tasks);
        let t = tasks
            .values()
            .filter(|t| t.conker.is_some())
            .max_by(|a, b| a.view.created_at.cmp(&b.view.created_at))?;
        let cancel = lock(&self.cancels).contains(&t.view.id);
        Some((t.view.clone(), t.conker.clone()?, cancel))
    }

    /// Create the one Conker task, replacing an ended one. Returns at once; the launch goes on.
    pub fn conker_create(
        self: &Arc<Self>,
        req: &crate::conker::ConkerRequest,
    ) -> Result<Container, EngineError> {
        let create = crate::conker::to_create(req)?;
        if let Some((c, _, _)) = self.conker_task() {
            if !c.state.is_final() {
                return Err(EngineError::TaskExists(c.id[..12].to_string()));
            }
            self.remove(&c.id, true)?;
        }
        let view = self.create_detached(create, Some(crate::conker::redacted(req)))?;
        if let Some(secs) = req.image_info.max_execution_time.filter(|s| *s > 0) {
            // Conker's MaxExecutionTime: stop the container once it has run that long.
            let engine = Arc::clone(self);
            let id = view.id.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(secs));
                if engine.get(&id).is_ok_and(|c| c.state == TaskState::Running) {
                    engine.update_anyway(
                        &id,
                        Step::Note("MaxExecutionTime"),
                        &format!("ran for {secs}s; stopping"),
                        |_| {},
                    );
                    let _ = engine.stop(&id, Duration::from_secs(10));
                }
            });
        }
        Ok(view)
    }
}
